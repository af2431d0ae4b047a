"""Technical-indicator features as pure numpy functions (no pyflink import here).

Definition used everywhere (stream and batch): the value of feature ``f`` at bar ``t`` is
TA-Lib's algorithm (or a numpy formula) applied to **exactly the last ``f.window`` bars**
``[t-window+1 .. t]`` of one symbol and timeframe, read at the last bar. Recursive
indicators (EMA, RSI, MACD, ATR, ADX, ...) depend on how much history they see; fixing the
history window makes a bounded Flink ``OVER (ROWS BETWEEN window-1 PRECEDING AND CURRENT
ROW)`` window and a batch computation agree exactly. With fewer than ``window`` bars a
feature is not ready (NaN).

One function computes them, :func:`compute_windows`: many windows at once, one per row,
with TA-Lib's algorithms written across rows (``udfs/talib_rows.py``). The stream job calls
it once per Arrow batch; :func:`compute_series` (batch) calls it too, so stream and batch
compute with the same function. TA-Lib itself is the
tests' independent reference (explicit slices, 1e-9 relative).

Names follow ``<indicator>_<params>[_<output>]`` (e.g. ``rsi_14``, ``macd_12_26_9_hist``);
the table in udfs/README.md lists them all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from udfs import talib_rows as tr

Arrays = Mapping[str, np.ndarray]  # open, high, low, close, volume, vwap (float64)
Matrices = Mapping[str, np.ndarray]  # the same columns, (rows, bars): one window per row
RECURSIVE_WINDOW = 100  # history for EMA-based indicators (>= 3x their period)


@dataclass(frozen=True)
class Feature:
    name: str
    window: int  # history in bars, including the current one
    fn: Callable[[Matrices], np.ndarray]  # value at the last bar of each row's `window` bars
    doc: str


class Bars(dict[str, np.ndarray]):
    """One feature window's bars (column -> (rows, window) matrix) plus the results of the
    multi-output indicators already computed on exactly these bars (BBANDS feeds five
    features, MACD three, STOCH two: each is computed once per window, not per feature)."""

    __slots__ = ("memo",)

    def __init__(self, arrays: Matrices) -> None:
        super().__init__(arrays)
        self.memo: dict[str, tuple[np.ndarray, ...]] = {}


def _once(
    a: Matrices, key: str, call: Callable[[], tuple[np.ndarray, ...]]
) -> tuple[np.ndarray, ...]:
    if not isinstance(a, Bars):
        return call()
    if key not in a.memo:
        a.memo[key] = call()
    return a.memo[key]


def _close(a: Matrices) -> np.ndarray:
    return a["close"][:, -1]


def _ema(period: int) -> Callable[[Matrices], np.ndarray]:
    return lambda a: tr.ema(a["close"], period)


def _macd(out: int) -> Callable[[Matrices], np.ndarray]:
    return lambda a: _once(a, "macd", lambda: tr.macd(a["close"], 12, 26, 9))[out]


def _bbands(a: Matrices) -> tuple[np.ndarray, ...]:
    return _once(a, "bbands", lambda: tr.bbands(a["close"], 2.0))


def _bb_pctb(a: Matrices) -> np.ndarray:
    up, _, lo = _bbands(a)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(up > lo, (_close(a) - lo) / (up - lo), np.nan)


def _bb_width(a: Matrices) -> np.ndarray:
    up, mid, lo = _bbands(a)
    return (up - lo) / mid


def _stoch(out: int) -> Callable[[Matrices], np.ndarray]:
    return lambda a: _once(a, "stoch", lambda: tr.stoch(a["high"], a["low"], a["close"]))[out]


def _logret(a: Matrices) -> np.ndarray:
    return np.log(_close(a) / a["close"][:, 0])


def _std(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, population std) of each row, sums added left to right."""
    n = x.shape[1]
    mean = tr.running_sum(x, 0, n) / n
    dev = x - mean[:, None]
    return mean, np.sqrt(tr.running_sum(dev * dev, 0, n) / n)


def _realized_vol(a: Matrices) -> np.ndarray:
    return _std(np.diff(np.log(a["close"]), axis=1))[1]


def _volume_z(a: Matrices) -> np.ndarray:
    v = a["volume"]
    mean, sd = _std(v)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(sd > 0, (v[:, -1] - mean) / sd, 0.0)


def _hlc(fn: Callable[..., np.ndarray]) -> Callable[[Matrices], np.ndarray]:
    return lambda a: fn(a["high"], a["low"], a["close"])


def _features() -> list[Feature]:
    rw = RECURSIVE_WINDOW
    f = [
        Feature(f"sma_{p}", p, lambda a: tr.sma(a["close"]), f"SMA({p}) of close")
        for p in (10, 20, 50)
    ]
    f += [Feature(f"ema_{p}", rw, _ema(p), f"EMA({p}) of close") for p in (12, 26, 50)]
    f.append(Feature("rsi_14", rw, lambda a: tr.rsi(a["close"], 14), "RSI(14)"))
    f += [
        Feature(f"macd_12_26_9_{out}", rw, _macd(i), f"MACD(12,26,9) {out}")
        for i, out in enumerate(("line", "signal", "hist"))
    ]
    f += [
        Feature("bb_20_2_upper", 20, lambda a: _bbands(a)[0], "Bollinger(20,2) upper"),
        Feature("bb_20_2_mid", 20, lambda a: _bbands(a)[1], "Bollinger(20,2) middle"),
        Feature("bb_20_2_lower", 20, lambda a: _bbands(a)[2], "Bollinger(20,2) lower"),
        Feature("bb_20_2_pctb", 20, _bb_pctb, "%b = (close-lower)/(upper-lower)"),
        Feature("bb_20_2_width", 20, _bb_width, "(upper-lower)/middle"),
        Feature("atr_14", rw, _hlc(tr.atr), "ATR(14)"),
        Feature("adx_14", rw, _hlc(tr.adx), "ADX(14)"),
        # TA-Lib's STOCH gives both outputs the %D lookback (17 bars before the current)
        Feature("stoch_14_3_3_k", 18, _stoch(0), "Stochastic %K(14, slow 3)"),
        Feature("stoch_14_3_3_d", 18, _stoch(1), "Stochastic %D(3)"),
        Feature(
            "obv_20",
            20,
            lambda a: tr.obv(a["close"], a["volume"]),
            "OBV accumulated over the last 20 bars",
        ),
        Feature(
            "mfi_14",
            15,
            lambda a: tr.mfi(a["high"], a["low"], a["close"], a["volume"]),
            "MFI(14)",
        ),
        Feature("cci_20", 20, _hlc(tr.cci), "CCI(20)"),
        Feature("willr_14", 14, _hlc(tr.willr), "Williams %R(14)"),
        Feature("roc_10", 11, lambda a: tr.roc(a["close"]), "ROC(10), percent"),
    ]
    f += [
        Feature(f"logret_{n}", n + 1, _logret, f"log(close / close {n} bars ago)")
        for n in (1, 5, 15)
    ]
    f += [
        Feature("rv_30", 31, _realized_vol, "std (ddof=0) of the last 30 one-bar log returns"),
        Feature(
            "vwap_dist",
            1,
            lambda a: _close(a) / a["vwap"][:, -1] - 1.0,
            "close / vwap - 1",
        ),
        Feature("volume_z_20", 20, _volume_z, "(volume - mean20) / std20 (ddof=0)"),
    ]
    return f


FEATURES: list[Feature] = _features()
FEATURE_NAMES: list[str] = [f.name for f in FEATURES]
MAX_WINDOW: int = max(f.window for f in FEATURES)
INPUTS = ("open", "high", "low", "close", "volume", "vwap")


def compute_windows(windows: Matrices, bars: np.ndarray) -> np.ndarray:
    """All features at the last bar of many windows: row i of ``windows[column]`` holds one
    window (oldest first, right-aligned in :data:`MAX_WINDOW` columns: padding on the left),
    ``bars[i]`` how many of its bars are real. Each feature reads only the last
    ``f.window`` bars of a row and is NaN where ``bars < f.window``. Returns a (rows,
    features) float64 matrix in :data:`FEATURE_NAMES` order. Rows never mix: a row's values
    do not depend on the other rows."""
    rows = len(bars)
    width = windows["close"].shape[1]
    out = np.full((rows, len(FEATURES)), np.nan)
    by_window: dict[int, Bars] = {}
    with np.errstate(all="ignore"):
        for i, f in enumerate(FEATURES):
            ready = bars >= f.window
            if not ready.any():
                continue
            sub = by_window.get(f.window)
            if sub is None:  # Fortran order on every path: each bar's column is contiguous
                sub = by_window[f.window] = Bars(
                    {
                        k: np.asfortranarray(m[:, width - f.window :], np.float64)
                        for k, m in windows.items()
                    }
                )
            out[:, i] = np.where(ready, f.fn(sub), np.nan)
    return out


def windows_of(arrays: Arrays) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Every bar's window of one series (oldest first): (column -> (len, MAX_WINDOW) view,
    NaN-padded on the left; real bars per row)."""
    n = len(arrays["close"])
    pad = np.full(MAX_WINDOW - 1, np.nan)
    views = {
        k: np.lib.stride_tricks.sliding_window_view(
            np.concatenate([pad, np.asarray(v, np.float64)]), MAX_WINDOW
        )
        for k, v in arrays.items()
    }
    return views, np.minimum(np.arange(1, n + 1), MAX_WINDOW)


def compute_series(arrays: Arrays, chunk: int = 4096) -> dict[str, np.ndarray]:
    """Features at every bar of one symbol/timeframe series (batch; same function as the
    stream: :func:`compute_windows` on every bar's window)."""
    views, bars = windows_of(arrays)
    n = len(bars)
    out = np.full((n, len(FEATURE_NAMES)), np.nan)
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        out[lo:hi] = compute_windows({k: v[lo:hi] for k, v in views.items()}, bars[lo:hi])
    return {name: out[:, i] for i, name in enumerate(FEATURE_NAMES)}
