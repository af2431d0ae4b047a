"""Walk-forward splitting of a training set by bar time, with the label embargo.

:func:`walk_forward_splits` cuts the bar times into ``folds + 1`` equal blocks; fold k tests
on block k and trains on the blocks before it (``expanding``) or on the ``window_blocks``
blocks before it (``rolling``). Labels look ``N`` bars ahead, so training rows whose label
window reaches into the test block are purged (:func:`embargo`: ``N`` bars of the longest
timeframe). :func:`inner_split` takes the last :data:`VALIDATION_FRAC` of a fold's training
time (purged again) as its early-stopping set.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from jobs.ml.dataset import timeframe_ms

VALIDATION_FRAC = 0.15


def embargo(df: pd.DataFrame, horizon: int) -> pd.Timedelta:
    """How far a label looks ahead: N bars of the longest timeframe in the data."""
    step = max(timeframe_ms(tf) for tf in df["timeframe"].unique())
    return pd.Timedelta(milliseconds=horizon * step)


def walk_forward_splits(
    ts: pd.Series,
    folds: int,
    gap: pd.Timedelta,
    scheme: str = "expanding",
    window_blocks: int = 1,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Walk-forward splits over ``folds + 1`` equal time blocks; fold k tests on block k.

    ``expanding``: train on all times before block k (minus ``gap``); ``rolling``: only on
    the ``window_blocks`` blocks before k (minus ``gap`` at the end), so old regimes age out.
    """
    if folds < 1:
        raise ValueError("folds must be >= 1")
    if scheme not in ("expanding", "rolling"):
        raise ValueError(f"scheme must be expanding or rolling, not {scheme!r}")
    if window_blocks < 1:
        raise ValueError("window_blocks must be >= 1")
    values = _naive(ts)
    times = np.unique(values)
    if len(times) < folds + 1:
        raise ValueError(f"{len(times)} distinct bar times: too few for {folds} folds")
    bounds = [times[i * len(times) // (folds + 1)] for i in range(folds + 1)]
    bounds.append(times[-1] + np.timedelta64(1, "ms"))
    splits = []
    for k in range(1, folds + 1):
        lo, hi = bounds[k], bounds[k + 1]
        start = bounds[max(0, k - window_blocks)] if scheme == "rolling" else values.min()
        train = np.flatnonzero((values >= start) & (values < lo - gap.to_timedelta64()))
        test = np.flatnonzero((values >= lo) & (values < hi))
        if len(train) == 0 or len(test) == 0:
            raise ValueError(f"fold {k}: empty train or test set (too little data)")
        splits.append((train, test))
    return splits


def _naive(ts: pd.Series) -> np.ndarray:
    """UTC datetime64[ns] values (a tz-aware Series' to_numpy() gives objects)."""
    s = pd.to_datetime(ts, utc=True).dt.tz_convert(None)
    return s.to_numpy(dtype="datetime64[ns]")


def inner_split(ts: pd.Series, idx: np.ndarray, gap: pd.Timedelta) -> tuple[np.ndarray, np.ndarray]:
    """Early-stopping split of training rows: the last 15 % of their time, purged."""
    t = _naive(ts)[idx]
    lo, hi = t.min(), t.max()
    cut = lo + (hi - lo) * (1 - VALIDATION_FRAC)
    fit = idx[t < cut - gap.to_timedelta64()]
    val = idx[t >= cut]
    if len(fit) == 0 or len(val) == 0:
        return idx, idx[-max(1, len(idx) // 10) :]
    return fit, val
