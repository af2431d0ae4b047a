"""udfs/talib_rows.py against TA-Lib itself on explicit slices of real Binance 1m candles:
each row-wise function must give, for every row, what TA-Lib gives on that row's bars alone
(1e-9 relative, the features' standard; many values are bit-identical)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest
import talib

from tests.conftest import CANDLES_CSV
from udfs import talib_rows as tr

ROWS = 300


@pytest.fixture(scope="module")
def bars() -> dict[str, np.ndarray]:
    """Concatenated real series of the 5 symbols (one per block), float64."""
    df = pd.read_csv(CANDLES_CSV)
    df = df.sort_values(["symbol", "ts_ms"]).groupby("symbol").head(2_000)
    return {k: df[k].to_numpy(np.float64) for k in ("open", "high", "low", "close", "volume")}


def windows(x: np.ndarray, width: int, starts: np.ndarray) -> np.ndarray:
    return np.stack([x[s : s + width] for s in starts])


@pytest.fixture(scope="module")
def starts(bars: dict[str, np.ndarray]) -> np.ndarray:
    rng = np.random.default_rng(7)
    return rng.choice(len(bars["close"]) - 100, ROWS, replace=False)


def agree(got: np.ndarray, want: list[float]) -> None:
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, np.array(want), rtol=1e-9, atol=1e-12)


CASES: dict[str, tuple[int, Callable, Callable]] = {
    # name: (bars, row-wise function on the matrices, TA-Lib on one row's arrays)
    "sma_20": (20, lambda m: tr.sma(m["close"]), lambda a: talib.SMA(a["close"], 20)[-1]),
    "ema_12": (100, lambda m: tr.ema(m["close"], 12), lambda a: talib.EMA(a["close"], 12)[-1]),
    "ema_50": (100, lambda m: tr.ema(m["close"], 50), lambda a: talib.EMA(a["close"], 50)[-1]),
    "rsi_14": (100, lambda m: tr.rsi(m["close"], 14), lambda a: talib.RSI(a["close"], 14)[-1]),
    "atr_14": (
        100,
        lambda m: tr.atr(m["high"], m["low"], m["close"], 14),
        lambda a: talib.ATR(a["high"], a["low"], a["close"], 14)[-1],
    ),
    "adx_14": (
        100,
        lambda m: tr.adx(m["high"], m["low"], m["close"], 14),
        lambda a: talib.ADX(a["high"], a["low"], a["close"], 14)[-1],
    ),
    "obv": (
        20,
        lambda m: tr.obv(m["close"], m["volume"]),
        lambda a: talib.OBV(a["close"], a["volume"])[-1],
    ),
    "mfi_14": (
        15,
        lambda m: tr.mfi(m["high"], m["low"], m["close"], m["volume"]),
        lambda a: talib.MFI(a["high"], a["low"], a["close"], a["volume"], 14)[-1],
    ),
    "cci_20": (
        20,
        lambda m: tr.cci(m["high"], m["low"], m["close"]),
        lambda a: talib.CCI(a["high"], a["low"], a["close"], 20)[-1],
    ),
    "willr_14": (
        14,
        lambda m: tr.willr(m["high"], m["low"], m["close"]),
        lambda a: talib.WILLR(a["high"], a["low"], a["close"], 14)[-1],
    ),
    "roc_10": (11, lambda m: tr.roc(m["close"]), lambda a: talib.ROC(a["close"], 10)[-1]),
}


@pytest.mark.parametrize("name", list(CASES))
def test_row_function_equals_talib_on_each_row(name: str, bars, starts) -> None:
    width, rows_fn, talib_fn = CASES[name]
    m = {k: windows(v, width, starts) for k, v in bars.items()}
    got = rows_fn(m)
    want = [talib_fn({k: v[i].copy() for k, v in m.items()}) for i in range(ROWS)]
    agree(got, want)


SCALES = {
    "tiny prices (1e-9)": lambda k, x: x * 1e-9 if k != "volume" else x,
    "huge prices (1e6)": lambda k, x: x * 1e6 if k != "volume" else x * 1e-6,
    "whole-number prices (ties)": lambda k, x: np.round(x) if k != "volume" else x,
}


@pytest.mark.parametrize("scale", list(SCALES))
@pytest.mark.parametrize("name", list(CASES))
def test_row_function_equals_talib_at_other_scales(name: str, scale: str, bars, starts) -> None:
    """TA-Lib's zero tests (1e-14, scaled dead-zones) hold for any price scale and ties."""
    width, rows_fn, talib_fn = CASES[name]
    m = {k: windows(SCALES[scale](k, v), width, starts[:100]) for k, v in bars.items()}
    got = rows_fn(m)
    want = [talib_fn({k: v[i].copy() for k, v in m.items()}) for i in range(100)]
    agree(got, want)


@pytest.mark.parametrize("out", [0, 1, 2])
def test_macd_equals_talib(out: int, bars, starts) -> None:
    m = windows(bars["close"], 100, starts)
    got = tr.macd(m, 12, 26, 9)[out]
    want = [talib.MACD(m[i].copy(), 12, 26, 9)[out][-1] for i in range(ROWS)]
    agree(got, want)


@pytest.mark.parametrize("out", [0, 1, 2])
def test_bbands_equals_talib(out: int, bars, starts) -> None:
    m = windows(bars["close"], 20, starts)
    got = tr.bbands(m, 2.0)[out]
    want = [talib.BBANDS(m[i].copy(), 20, 2.0, 2.0, 0)[out][-1] for i in range(ROWS)]
    agree(got, want)


@pytest.mark.parametrize("out", [0, 1])
def test_stoch_equals_talib(out: int, bars, starts) -> None:
    m = {k: windows(bars[k], 18, starts) for k in ("high", "low", "close")}
    got = tr.stoch(m["high"], m["low"], m["close"])[out]
    want = [
        talib.STOCH(m["high"][i].copy(), m["low"][i].copy(), m["close"][i].copy(), 14, 3, 0, 3, 0)[
            out
        ][-1]
        for i in range(ROWS)
    ]
    agree(got, want)


def test_degenerate_rows_follow_talib() -> None:
    """Flat bars (zero ranges, no changes): TA-Lib's zero branches, not NaN."""
    flat = np.full((1, 100), 5.0)
    args = {k: flat[0].copy() for k in ("high", "low", "close", "volume")}
    assert tr.rsi(flat, 14)[0] == talib.RSI(args["close"], 14)[-1]
    assert (
        tr.willr(flat[:, :14], flat[:, :14], flat[:, :14])[0]
        == talib.WILLR(args["high"][:14], args["low"][:14], args["close"][:14], 14)[-1]
    )
    assert (
        tr.cci(flat[:, :20], flat[:, :20], flat[:, :20])[0]
        == talib.CCI(args["high"][:20], args["low"][:20], args["close"][:20], 20)[-1]
    )
    assert (
        tr.stoch(flat[:, :18], flat[:, :18], flat[:, :18])[0][0]
        == talib.STOCH(args["high"][:18], args["low"][:18], args["close"][:18], 14, 3, 0, 3, 0)[0][
            -1
        ]
    )
    assert (
        tr.adx(flat, flat, flat, 14)[0]
        == talib.ADX(args["high"], args["low"], args["close"], 14)[-1]
    )
    assert (
        tr.mfi(flat[:, :15], flat[:, :15], flat[:, :15], flat[:, :15])[0]
        == talib.MFI(
            args["high"][:15], args["low"][:15], args["close"][:15], args["volume"][:15], 14
        )[-1]
    )
