"""Training sets: point-in-time features from Feast + forward-return labels.

One row per bar (symbol, timeframe, bar) whose event time lies in ``[start, end)``:

- **entity timestamp** = the bar's ``event_time`` (its last millisecond, ``window_end_ms - 1``):
  the moment the bar closed and a prediction could be made.
- **features** = Feast ``get_historical_features`` with the ``model_v1`` service, point in
  time: for each entity row the feature row of the same symbol and timeframe with the
  latest ``event_time <= event_timestamp`` (and ``>= event_timestamp - TTL``; older ->
  null). A feature row from a later bar can never be joined; ``window_end_ms`` (lineage,
  not a model input) says which bar the features came from, so this can be checked.
- **labels** look ahead by design: ``fwd_ret_N = ln(close[t + N bars] / close[t])`` over
  the same symbol/timeframe series, where ``t + N bars`` is the bar whose event time is
  exactly ``N * timeframe`` later (a missing bar -> unknown, not the next one available),
  and ``fwd_ret_N_class`` is ``up`` if ``fwd_ret_N > threshold``, ``down`` if
  ``< -threshold``, else ``flat``. Rows whose label is unknown (end of data, gaps) are
  dropped. Closes come from the offline store (duplicates -> latest ``computed_at``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from infra.feature_store import (
    CANDLES_VIEW,
    ENTITY_KEYS,
    ENTITY_TS,
    EVENT_TS,
    FeatureStoreClient,
    to_feature_frame,
)
from infra.settings import Settings
from udfs.contract import CLASSES, timeframe_ms

log = logging.getLogger(__name__)
DEFAULT_FLAT_THRESHOLD = 0.001  # |fwd log return| <= 0.1 % -> flat
LINEAGE = f"{CANDLES_VIEW}:window_end_ms"
_LABEL = re.compile(r"^fwd_ret_(\d+)$")


def parse_labels(specs: Sequence[str]) -> list[int]:
    """``["fwd_ret_5", "fwd_ret_15,fwd_ret_60"]`` -> ``[5, 15, 60]`` (sorted, unique)."""
    out: set[int] = set()
    for spec in specs:
        for part in spec.split(","):
            m = _LABEL.match(part.strip())
            if not m or int(m.group(1)) < 1:
                raise ValueError(f"label {part!r}: expected fwd_ret_N with N >= 1")
            out.add(int(m.group(1)))
    if not out:
        raise ValueError("at least one label (fwd_ret_N) is needed")
    return sorted(out)


def forward_returns(bars: pd.DataFrame, horizons: Sequence[int]) -> pd.DataFrame:
    """``fwd_ret_N`` per bar of ``bars`` (symbol, timeframe, event_time, close).

    The future bar is looked up by exact event time ``event_time + N * timeframe`` in the
    same series; if it is missing the return is NaN (unknown).
    """
    out = bars.loc[:, [*ENTITY_KEYS, EVENT_TS, "close"]].copy()
    step = pd.to_timedelta(out["timeframe"].map(timeframe_ms), unit="ms")
    future = bars.loc[:, [*ENTITY_KEYS, EVENT_TS, "close"]].rename(
        columns={EVENT_TS: "_future_ts", "close": "_future_close"}
    )
    for n in horizons:
        out["_future_ts"] = out[EVENT_TS] + n * step
        merged = out.merge(future, on=[*ENTITY_KEYS, "_future_ts"], how="left")
        out[f"fwd_ret_{n}"] = np.log(
            merged["_future_close"].to_numpy(np.float64) / out["close"].to_numpy(np.float64)
        )
    return out.drop(columns=["_future_ts", "close"])


def label_class(ret: pd.Series, threshold: float) -> pd.Series:
    """up / down / flat by a symmetric threshold on the log return (NaN stays NaN)."""
    cls = np.where(ret > threshold, "up", np.where(ret < -threshold, "down", "flat"))
    return pd.Series(cls, index=ret.index).where(ret.notna())


@dataclass
class DatasetResult:
    path: Path
    rows: int
    dropped_unknown_label: int
    seconds: float
    balance: dict[str, dict[str, int]] = field(default_factory=dict)


def read_bars(
    client: FeatureStoreClient,
    start: pd.Timestamp,
    end: pd.Timestamp,
    symbols: Sequence[str] | None = None,
    timeframes: Sequence[str] | None = None,
) -> pd.DataFrame:
    """(symbol, timeframe, event_time, close) of offline rows in ``[start, end)``, deduped."""
    files = client.offline_files()
    if not files:
        raise FileNotFoundError(f"no offline feature files in {client.settings.feast_offline_dir}")
    filters: list[tuple[str, str, object]] = [
        (EVENT_TS, ">=", start.to_pydatetime()),
        (EVENT_TS, "<", end.to_pydatetime()),
    ]
    if symbols:
        filters.append(("symbol", "in", list(symbols)))
    if timeframes:
        filters.append(("timeframe", "in", list(timeframes)))
    cols = [*ENTITY_KEYS, EVENT_TS, "computed_at", "close"]
    df = pq.read_table(files, columns=cols, filters=filters).to_pandas()
    df = df.sort_values([*ENTITY_KEYS, EVENT_TS, "computed_at"], kind="stable")
    df = df.drop_duplicates([*ENTITY_KEYS, EVENT_TS], keep="last")
    return df.drop(columns=["computed_at"]).reset_index(drop=True)


def build_dataset(
    settings: Settings,
    start: pd.Timestamp,
    end: pd.Timestamp,
    labels: Sequence[str],
    out: Path,
    *,
    symbols: Sequence[str] | None = None,
    timeframes: Sequence[str] | None = None,
    flat_threshold: float = DEFAULT_FLAT_THRESHOLD,
    chunk_rows: int = 50_000,
    on_progress: Callable[[int, int], None] | None = None,
    client: FeatureStoreClient | None = None,
) -> DatasetResult:
    """Build the training set for bars in ``[start, end)`` and write it to ``out`` (parquet).

    ``on_progress(done, total)`` is called after each chunk of entity rows.
    """
    t0 = time.monotonic()
    start, end = utc_ts(start), utc_ts(end)
    if end <= start:
        raise ValueError(f"--end {end} must be after --start {start}")
    horizons = parse_labels(labels)
    client = client or FeatureStoreClient(settings)

    # bars in [start, end) are the entity rows; the labels may read up to N bars past end
    bars = read_bars(client, start, end, symbols, timeframes)
    if bars.empty:
        raise ValueError(f"no bars in [{start}, {end}) in {settings.feast_offline_dir}")
    max_step = max(timeframe_ms(tf) for tf in bars["timeframe"].unique())
    horizon_end = end + pd.Timedelta(milliseconds=max(horizons) * max_step)
    future = read_bars(client, start, horizon_end, symbols, timeframes)
    rets = forward_returns(future, horizons)
    ret_cols = [f"fwd_ret_{n}" for n in horizons]

    entity_df = bars.loc[:, [*ENTITY_KEYS, EVENT_TS]].rename(columns={EVENT_TS: ENTITY_TS})
    refs = [*client.service_refs(), LINEAGE]
    parts = []
    total = len(entity_df)
    for i in range(0, total, chunk_rows):
        chunk = entity_df.iloc[i : i + chunk_rows]
        parts.append(client.historical_features(chunk, refs))
        if on_progress:
            on_progress(min(i + chunk_rows, total), total)
    feats = pd.concat(parts, ignore_index=True)

    df = feats.merge(
        rets.rename(columns={EVENT_TS: ENTITY_TS}), on=[*ENTITY_KEYS, ENTITY_TS], how="left"
    )
    known = df[ret_cols].notna().all(axis=1)
    dropped = int((~known).sum())
    df = df.loc[known].copy()
    balance: dict[str, dict[str, int]] = {}
    for n, col in zip(horizons, ret_cols, strict=True):
        df[f"fwd_ret_{n}_class"] = label_class(df[col], flat_threshold)
        counts = df[f"fwd_ret_{n}_class"].value_counts()
        balance[col] = {c: int(counts.get(c, 0)) for c in CLASSES}
    df = df.sort_values([ENTITY_TS, *ENTITY_KEYS], kind="stable").reset_index(drop=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    df.to_parquet(out, index=False)
    res = DatasetResult(out, len(df), dropped, time.monotonic() - t0, balance)
    log.info(
        "dataset %s: %d rows (%d dropped: label unknown) in %.1f s; balance %s",
        out,
        res.rows,
        dropped,
        res.seconds,
        balance,
    )
    return res


def feature_rows_from_candles(candles: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """`features` rows (as the Flink features job writes them) from candles in batch.

    ``candles``: symbol, ts_ms (bar start), open, high, low, close, volume and optionally
    vwap (default: the (h+l+c)/3 proxy) and trade_count. Each symbol's bars must be
    consecutive; features use udfs.indicators.compute_series (same definition as the job).
    """
    from udfs.indicators import INPUTS, compute_series

    step = timeframe_ms(timeframe)
    out = []
    for _, g in candles.groupby("symbol", sort=True):
        g = g.sort_values("ts_ms").reset_index(drop=True)
        if "vwap" not in g:
            g["vwap"] = (g.high + g.low + g.close) / 3
        if "trade_count" not in g:
            g["trade_count"] = 0
        f = pd.DataFrame(compute_series({k: g[k].to_numpy(np.float64) for k in INPUTS}))
        rows = pd.concat([g, f], axis=1)
        rows["timeframe"] = timeframe
        rows["window_start_ms"] = g.ts_ms
        rows["window_end_ms"] = g.ts_ms + step
        rows["features_ready"] = f.notna().all(axis=1)
        rows[EVENT_TS] = pd.to_datetime(rows.window_end_ms - 1, unit="ms", utc=True)
        rows["computed_at"] = pd.Timestamp.now(tz="UTC")
        out.append(rows)
    return to_feature_frame(pd.concat(out, ignore_index=True))


def utc_ts(ts: pd.Timestamp) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
