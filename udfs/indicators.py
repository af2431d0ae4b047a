"""Technical-indicator features as pure numpy functions (no pyflink import here).

Definition used everywhere (stream and batch): the value of feature ``f`` at bar ``t`` is
TA-Lib (or numpy) applied to **exactly the last ``f.window`` bars** ``[t-window+1 .. t]`` of
one symbol and timeframe, read at the last bar. Recursive indicators (EMA, RSI, MACD, ATR,
ADX, ...) depend on how much history they see; fixing the history window makes a bounded
Flink ``OVER (ROWS BETWEEN window-1 PRECEDING AND CURRENT ROW)`` window and a batch
computation agree exactly. With fewer than ``window`` bars a feature is not ready (NaN).

Names follow ``<indicator>_<params>[_<output>]`` (e.g. ``rsi_14``, ``macd_12_26_9_hist``);
the table in the README lists them all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import talib

Arrays = Mapping[str, np.ndarray]  # open, high, low, close, volume, vwap (float64)
RECURSIVE_WINDOW = 100  # history for EMA-based indicators (>= 3x their period)


@dataclass(frozen=True)
class Feature:
    name: str
    window: int  # history in bars, including the current one
    fn: Callable[[Arrays], float]  # value at the last bar of exactly `window` bars
    doc: str


def _last(x: np.ndarray) -> float:
    return float(x[-1])


SMA_T = talib.MA_Type.SMA


def _sma(p: int) -> Callable[[Arrays], float]:
    return lambda a: _last(talib.SMA(a["close"], p))


def _ema(p: int) -> Callable[[Arrays], float]:
    return lambda a: _last(talib.EMA(a["close"], p))


def _macd(out: int) -> Callable[[Arrays], float]:
    return lambda a: _last(talib.MACD(a["close"], 12, 26, 9)[out])


def _bbands(a: Arrays) -> tuple[float, float, float]:
    up, mid, lo = talib.BBANDS(a["close"], 20, 2.0, 2.0, SMA_T)
    return _last(up), _last(mid), _last(lo)


def _bb_pctb(a: Arrays) -> float:
    up, _, lo = _bbands(a)
    return (float(a["close"][-1]) - lo) / (up - lo) if up > lo else float("nan")


def _bb_width(a: Arrays) -> float:
    up, mid, lo = _bbands(a)
    return (up - lo) / mid


def _stoch(out: int) -> Callable[[Arrays], float]:
    def f(a: Arrays) -> float:
        k_d = talib.STOCH(a["high"], a["low"], a["close"], 14, 3, SMA_T, 3, SMA_T)
        return _last(k_d[out])

    return f


def _logret(n: int) -> Callable[[Arrays], float]:
    return lambda a: float(np.log(a["close"][-1] / a["close"][-1 - n]))


def _realized_vol(a: Arrays) -> float:
    return float(np.std(np.diff(np.log(a["close"])), ddof=0))


def _volume_z(a: Arrays) -> float:
    v = a["volume"]
    sd = v.std()
    return float((v[-1] - v.mean()) / sd) if sd > 0 else 0.0


def _hlc(fn: Callable[..., np.ndarray], *args: int) -> Callable[[Arrays], float]:
    return lambda a: _last(fn(a["high"], a["low"], a["close"], *args))


def _features() -> list[Feature]:
    rw = RECURSIVE_WINDOW
    f = [Feature(f"sma_{p}", p, _sma(p), f"SMA({p}) of close") for p in (10, 20, 50)]
    f += [Feature(f"ema_{p}", rw, _ema(p), f"EMA({p}) of close") for p in (12, 26, 50)]
    f.append(Feature("rsi_14", rw, lambda a: _last(talib.RSI(a["close"], 14)), "RSI(14)"))
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
        Feature("atr_14", rw, _hlc(talib.ATR, 14), "ATR(14)"),
        Feature("adx_14", rw, _hlc(talib.ADX, 14), "ADX(14)"),
        # TA-Lib's STOCH gives both outputs the %D lookback (17 bars before the current)
        Feature("stoch_14_3_3_k", 18, _stoch(0), "Stochastic %K(14, slow 3)"),
        Feature("stoch_14_3_3_d", 18, _stoch(1), "Stochastic %D(3)"),
        Feature(
            "obv_20",
            20,
            lambda a: _last(talib.OBV(a["close"], a["volume"])),
            "OBV accumulated over the last 20 bars",
        ),
        Feature(
            "mfi_14",
            15,
            lambda a: _last(talib.MFI(a["high"], a["low"], a["close"], a["volume"], 14)),
            "MFI(14)",
        ),
        Feature("cci_20", 20, _hlc(talib.CCI, 20), "CCI(20)"),
        Feature("willr_14", 14, _hlc(talib.WILLR, 14), "Williams %R(14)"),
        Feature("roc_10", 11, lambda a: _last(talib.ROC(a["close"], 10)), "ROC(10), percent"),
    ]
    f += [
        Feature(f"logret_{n}", n + 1, _logret(n), f"log(close / close {n} bars ago)")
        for n in (1, 5, 15)
    ]
    f += [
        Feature("rv_30", 31, _realized_vol, "std (ddof=0) of the last 30 one-bar log returns"),
        Feature(
            "vwap_dist",
            1,
            lambda a: float(a["close"][-1] / a["vwap"][-1] - 1.0),
            "close / vwap - 1",
        ),
        Feature("volume_z_20", 20, _volume_z, "(volume - mean20) / std20 (ddof=0)"),
    ]
    return f


FEATURES: list[Feature] = _features()
FEATURE_NAMES: list[str] = [f.name for f in FEATURES]
MAX_WINDOW: int = max(f.window for f in FEATURES)
INPUTS = ("open", "high", "low", "close", "volume", "vwap")


def compute_last(arrays: Arrays) -> dict[str, float]:
    """All features at the last bar of ``arrays`` (oldest first). Each feature sees only
    its own last ``window`` bars; with fewer bars it is NaN (not ready)."""
    n = len(arrays["close"])
    out: dict[str, float] = {}
    for f in FEATURES:
        if n < f.window:
            out[f.name] = float("nan")
            continue
        sl = {
            k: np.ascontiguousarray(v[n - f.window :], dtype=np.float64) for k, v in arrays.items()
        }
        out[f.name] = f.fn(sl)
    return out


def compute_series(arrays: Arrays) -> dict[str, np.ndarray]:
    """Features at every bar of one symbol/timeframe series (batch; same definition)."""
    n = len(arrays["close"])
    cols = {name: np.full(n, np.nan) for name in FEATURE_NAMES}
    for t in range(n):
        lo = max(0, t + 1 - MAX_WINDOW)
        vals = compute_last({k: v[lo : t + 1] for k, v in arrays.items()})
        for name, v in vals.items():
            cols[name][t] = v
    return cols
