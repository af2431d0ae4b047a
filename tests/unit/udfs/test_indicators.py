"""Indicator features on real Binance 1m candles (12 May 2021 sell-off) vs independent batch
computations: TA-Lib over the full series, TA-Lib on explicit slices, pandas formulas."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import talib

from tests.conftest import CANDLES_CSV
from udfs.indicators import FEATURE_NAMES, FEATURES, RECURSIVE_WINDOW, compute_series

REL = 1e-9
BY_NAME = {f.name: f for f in FEATURES}


@pytest.fixture(scope="module")
def candles() -> dict[str, pd.DataFrame]:
    df = pd.read_csv(CANDLES_CSV)
    start = pd.Timestamp("2021-05-12 18:00", tz="UTC").value // 1_000_000  # sell-off
    out = {}
    for sym, g in df[df.ts_ms >= start].groupby("symbol"):
        g = g.sort_values("ts_ms").head(400).reset_index(drop=True)
        g["vwap"] = (g.high + g.low + g.close) / 3  # the 2021 file has no VWAP; a proxy input
        out[str(sym)] = g
    assert len(out) == 5
    return out


@pytest.fixture(scope="module")
def features(candles: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    cols = ["open", "high", "low", "close", "volume", "vwap"]
    return {
        s: pd.DataFrame(compute_series({c: g[c].to_numpy(np.float64) for c in cols}))
        for s, g in candles.items()
    }


def close_enough(got: pd.Series, want: pd.Series, rel: float = REL) -> None:
    mask = want.notna()
    assert mask.sum() > 100
    np.testing.assert_allclose(got[mask].to_numpy(), want[mask].to_numpy(), rtol=rel, atol=1e-12)


def test_thirty_features_documented() -> None:
    assert len(FEATURES) == 30 and len(set(FEATURE_NAMES)) == 30


def test_warmup_not_ready(features: dict[str, pd.DataFrame]) -> None:
    for feats in features.values():
        for f in FEATURES:
            col = feats[f.name]
            assert col.iloc[: f.window - 1].isna().all(), f.name
            assert col.iloc[f.window - 1 :].notna().all(), f.name


def test_finite_lookback_features_equal_talib_on_full_series(candles, features) -> None:
    for sym, g in candles.items():
        h, lo, c, v = (g[k].to_numpy(np.float64) for k in ("high", "low", "close", "volume"))
        f = features[sym]
        up, mid, low = talib.BBANDS(c, 20, 2.0, 2.0, 0)
        k, d = talib.STOCH(h, lo, c, 14, 3, 0, 3, 0)
        want = {
            "sma_10": talib.SMA(c, 10),
            "sma_20": talib.SMA(c, 20),
            "sma_50": talib.SMA(c, 50),
            "bb_20_2_upper": up,
            "bb_20_2_mid": mid,
            "bb_20_2_lower": low,
            "bb_20_2_pctb": (c - low) / (up - low),
            "bb_20_2_width": (up - low) / mid,
            "stoch_14_3_3_k": k,
            "stoch_14_3_3_d": d,
            "mfi_14": talib.MFI(h, lo, c, v, 14),
            "cci_20": talib.CCI(h, lo, c, 20),
            "willr_14": talib.WILLR(h, lo, c, 14),
            "roc_10": talib.ROC(c, 10),
        }
        for name, w in want.items():
            close_enough(f[name], pd.Series(w), rel=1e-7 if name.startswith("stoch") else REL)


def test_recursive_features_equal_talib_on_their_history_window(candles, features) -> None:
    rng = np.random.default_rng(5)
    for sym, g in candles.items():
        h, lo, c = (g[k].to_numpy(np.float64) for k in ("high", "low", "close"))
        for t in rng.choice(np.arange(RECURSIVE_WINDOW - 1, len(g)), 15, replace=False):
            s = slice(t + 1 - RECURSIVE_WINDOW, t + 1)
            macd = talib.MACD(c[s], 12, 26, 9)
            want = {
                "ema_12": talib.EMA(c[s], 12)[-1],
                "ema_26": talib.EMA(c[s], 26)[-1],
                "ema_50": talib.EMA(c[s], 50)[-1],
                "rsi_14": talib.RSI(c[s], 14)[-1],
                "macd_12_26_9_line": macd[0][-1],
                "macd_12_26_9_signal": macd[1][-1],
                "macd_12_26_9_hist": macd[2][-1],
                "atr_14": talib.ATR(h[s], lo[s], c[s], 14)[-1],
                "adx_14": talib.ADX(h[s], lo[s], c[s], 14)[-1],
            }
            for name, w in want.items():
                assert features[sym][name].iloc[t] == pytest.approx(w, rel=REL, abs=1e-12), name
        # the 100-bar history is long enough: EMA(12) is within 1e-6 of the full-history value
        full = talib.EMA(c, 12)
        got = features[sym]["ema_12"].to_numpy()
        m = ~np.isnan(got)
        assert np.max(np.abs(got[m] - full[m]) / full[m]) < 1e-6


def test_simple_features_equal_pandas(candles, features) -> None:
    for sym, g in candles.items():
        f = features[sym]
        lr = np.log(g.close / g.close.shift(1))
        close_enough(f["logret_1"], lr)
        close_enough(f["logret_5"], np.log(g.close / g.close.shift(5)))
        close_enough(f["logret_15"], np.log(g.close / g.close.shift(15)))
        close_enough(f["rv_30"], lr.rolling(30).std(ddof=0), rel=1e-7)
        close_enough(f["vwap_dist"], g.close / g.vwap - 1)
        vz = (g.volume - g.volume.rolling(20).mean()) / g.volume.rolling(20).std(ddof=0)
        close_enough(f["volume_z_20"], vz, rel=1e-7)
        # OBV over the window: first bar's volume, then +/- volume by the close's direction
        sign = np.sign(g.close.diff()).fillna(0)
        obv = g.volume.shift(19) + (sign * g.volume).rolling(19).sum()
        close_enough(f["obv_20"], obv, rel=1e-7)


def test_no_lookahead(candles, features) -> None:
    """Computing on a prefix gives exactly the same values for that prefix."""
    cols = ["open", "high", "low", "close", "volume", "vwap"]
    sym, g = next(iter(candles.items()))
    cut = 250
    prefix = pd.DataFrame(compute_series({c: g[c].to_numpy(np.float64)[:cut] for c in cols}))
    pd.testing.assert_frame_equal(prefix, features[sym].iloc[:cut].reset_index(drop=True))
