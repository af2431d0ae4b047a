"""The strategy oracle (tests/reference_strategy.py) on real candles, and the production
engine (udfs/strategy.py ``run_batch``) compared with it row by row.

Bars: 3 days of real Binance 1m candles of the 5 symbols (2021-04-24..26 UTC, which holds
the exchange's 2021-04-25 maintenance gap, XRPUSDT resuming one minute before the others),
``bar_end_ms = ts_ms + 60_000``. Predictions are synthetic but deterministic: a seeded RNG
mixed with the real forward and backward 5-bar returns, so signals correlate with prices;
~5% of rows have no prediction (degraded). The "gaps" variants also drop rows (30% of
ETHUSDT's bars at random, a 40-minute SOLUSDT block) so groups without a bar for some
symbols occur; the kill-switch config runs 10 days (2021-04-14..23, with the 2021-04-20
maintenance gap) since the switch fires at most once per UTC day. Two hand-made scenarios
pin exact values (kill-switch of a symbol without a bar at T, rejected order re-emission).

Each config is chosen so that given rules fire many times (asserted from the oracle's
``stats``); the oracle's own outputs are checked for the md's identities; then
``run_batch`` must produce the same frames (ids/sides/reasons/statuses exactly, floats with
rtol 1e-9).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import pandas as pd
import pytest

from infra.settings import SHARED_DATA
from tests.reference_strategy import (
    DEFAULTS,
    EQUITY_COLUMNS,
    FILL_COLUMNS,
    ORDER_COLUMNS,
    reference_backtest,
)

CANDLES_CSV = SHARED_DATA / "binance_1m_top5_2021.csv.gz"
START_MS = 1_619_222_400_000  # 2021-04-24 00:00 UTC
DAYS = 3
LONG_START_MS = 1_618_358_400_000  # 2021-04-14 00:00 UTC: 10 days for the kill-switch
LONG_DAYS = 10


@functools.lru_cache(maxsize=1)
def _csv() -> pd.DataFrame:
    return pd.read_csv(CANDLES_CSV)


@functools.lru_cache(maxsize=2)
def _candles(start_ms: int, days: int) -> pd.DataFrame:
    df = _csv()
    df = df[(df.ts_ms >= start_ms) & (df.ts_ms < start_ms + days * 86_400_000)].copy()
    df["bar_end_ms"] = df["ts_ms"].astype("int64") + 60_000
    return df.sort_values(["symbol", "bar_end_ms"]).reset_index(drop=True)


@functools.lru_cache(maxsize=4)
def _bars(variant: str) -> pd.DataFrame:
    long = variant.startswith("long")
    df = _candles(LONG_START_MS, LONG_DAYS) if long else _candles(START_MS, DAYS)
    rng = np.random.default_rng(20210424)
    g = df.groupby("symbol")["close"]
    lc = np.log(df["close"])
    fwd = (g.shift(-5).pipe(np.log) - lc).fillna(0.0)
    bwd = (lc - g.shift(5).pipe(np.log)).fillna(0.0)
    sd = float(np.std(fwd)) or 1.0
    z = 0.9 * fwd / sd + 0.3 * bwd / sd + rng.normal(0.0, 1.0, len(df))
    sig = np.clip(0.25 * np.tanh(z / 1.5) + 0.03, -0.45, 0.45)
    mid = rng.uniform(0.25, 0.5, len(df))
    p_up = mid + sig / 2
    p_down = mid - sig / 2
    nan_rows = rng.random(len(df)) < 0.05
    p_up[nan_rows] = np.nan
    p_down[nan_rows] = np.nan
    one_side = rng.random(len(df)) < 0.005  # only one probability missing: degraded too
    p_down[one_side] = np.nan
    bars = pd.DataFrame(
        {
            "symbol": df["symbol"],
            "bar_end_ms": df["bar_end_ms"],
            "open": df["open"],
            "high": df["high"],
            "low": df["low"],
            "close": df["close"],
            "p_up": p_up,
            "p_down": p_down,
        }
    )
    if variant.endswith("gaps"):
        drop = (bars.symbol == "ETHUSDT") & (rng.random(len(bars)) < 0.3)
        t0 = START_MS + 86_400_000 + 10 * 3_600_000
        block = (bars.symbol == "SOLUSDT") & bars.bar_end_ms.between(t0, t0 + 40 * 60_000)
        bars = bars[~(drop | block)]
    # rows in a non-sorted order: the engines must sort themselves
    return bars.sample(frac=1.0, random_state=7).reset_index(drop=True)


# name -> (bars variant, config overrides, stats keys that must be >= the given count)
CONFIGS: dict[str, tuple[str, dict[str, Any], dict[str, int]]] = {
    "defaults": (
        "base",
        {},
        {"signal_entry": 100, "signal_exit": 50, "max_hold": 5, "cooldown_block": 50},
    ),
    "active": (
        "base",
        {
            "position_fraction": 0.3,  # 3000 > max_position_notional: that cap binds
            "stop_loss_pct": 0.002,
            "max_hold_bars": 6,
            "cooldown_bars": 4,
            "min_notional": 900.0,  # gross headroom below this -> skip
            "entry_threshold": 0.08,
            "exit_threshold": -0.02,
        },
        {
            "signal_entry": 100,
            "signal_exit": 20,
            "max_hold": 20,
            "stop_loss": 20,
            "cooldown_block": 50,
            "max_position_binding": 50,
            "max_gross_binding": 10,
            "min_notional_skip": 10,
            "gross_full_block": 10,
            "max_hold_kept_by_signal": 5,
            "degraded_holding_exit": 5,
        },
    ),
    "kill": (
        "long_gaps",
        {
            "position_fraction": 0.5,
            "max_position_notional": 5_000.0,
            "max_gross_notional": 20_000.0,
            "max_daily_loss_pct": 0.006,
            "stop_loss_pct": 0.01,
            "max_hold_bars": 30,
            "cooldown_bars": 2,
        },
        {
            "kill_switch_events": 8,
            "kill_switch": 8,
            "kill_switch_no_bar": 1,
            "killed_block": 50,
            "signal_entry": 50,
            "rejected": 10,
        },
    ),
    "cash": (
        "base",
        {
            "initial_cash": 500.0,
            "position_fraction": 1.0,
            "max_position_notional": 1e9,
            "max_gross_notional": 1e9,
            "qty_step": 0.01,
            "min_notional": 1.0,
            "max_daily_loss_pct": 0.5,
            "slippage_bps": 5.0,
            "fee_bps": 7.5,
            "strategy_id": "cash",
        },
        {"rejected": 10, "partial_buy_fill": 10, "signal_entry": 50},
    ),
    "gaps": (
        "gaps",
        {
            "position_fraction": 0.3,
            "stop_loss_pct": 0.003,
            "max_hold_bars": 6,
            "cooldown_bars": 3,
            "max_daily_loss_pct": 0.01,
            "min_notional": 500.0,
        },
        {
            "signal_entry": 100,
            "stop_loss": 10,
            "max_hold": 10,
            "kill_switch": 1,
            "fill_after_gap": 10,
        },
    ),
}


@functools.cache
def _oracle(name: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict[str, int]]:
    variant, cfg, _ = CONFIGS[name]
    stats: dict[str, int] = {}
    o, f, e = reference_backtest(_bars(variant), cfg, stats)
    return o, f, e, stats


def _cfg(name: str) -> dict[str, Any]:
    return {**DEFAULTS, **CONFIGS[name][1]}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_oracle_rules_fire(name: str) -> None:
    _, _, _, stats = _oracle(name)
    for key, at_least in CONFIGS[name][2].items():
        assert stats[key] >= at_least, (name, key, stats)


def test_oracle_covers_everything_across_configs() -> None:
    total: dict[str, int] = {}
    for name in CONFIGS:
        for k, v in _oracle(name)[3].items():
            total[k] = total.get(k, 0) + v
    for k, v in total.items():
        assert v > 0, (k, total)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_oracle_identities(name: str) -> None:
    orders, fills, equity, stats = _oracle(name)
    cfg = _cfg(name)
    bars = _bars(CONFIGS[name][0])
    assert list(orders.columns) == ORDER_COLUMNS
    assert list(fills.columns) == FILL_COLUMNS
    assert list(equity.columns) == EQUITY_COLUMNS

    new = orders[orders.status == "new"]
    rej = orders[orders.status == "rejected"]
    assert set(orders.status) <= {"new", "rejected"}
    assert new.client_order_id.is_unique
    assert not new.duplicated(["symbol", "bar_end_ms"]).any()  # one order per symbol per bar
    assert (
        new.client_order_id
        == cfg["strategy_id"] + "-" + new.symbol + "-" + new.bar_end_ms.astype(str) + "-" + new.side
    ).all()
    assert rej.client_order_id.isin(new.client_order_id).all()
    assert (rej.reason == "insufficient_cash").all() and (rej.side == "buy").all()
    assert fills.client_order_id.is_unique
    assert not fills.client_order_id.isin(rej.client_order_id).any()
    assert len(fills) + len(rej) + stats["pending_at_end"] == len(new)
    assert (new.loc[new.side == "buy", "reason"] == "signal_entry").all()
    assert set(new.loc[new.side == "sell", "reason"]) <= {
        "stop_loss",
        "max_hold",
        "signal_exit",
        "kill_switch",
    }

    # entries: caps, min notional, quantity grid
    buys = new[new.side == "buy"]
    notional = buys.qty * buys.decision_price
    assert (notional <= cfg["max_position_notional"] * (1 + 1e-12)).all()
    assert (notional >= cfg["min_notional"]).all()
    assert (buys.signal >= cfg["entry_threshold"]).all()
    steps = buys.qty / cfg["qty_step"]
    assert np.allclose(steps, np.round(steps), rtol=0, atol=1e-6)

    # fills replayed independently: cash, positions, avg entry, realized pnl, fees
    bars_by_key = bars.set_index(["symbol", "bar_end_ms"])
    s = cfg["slippage_bps"] / 1e4
    cash, realized, fees = cfg["initial_cash"], 0.0, 0.0
    pos: dict[str, float] = {}
    avg: dict[str, float] = {}
    by_id = new.set_index("client_order_id")
    for row in fills.itertuples(index=False):
        o = by_id.loc[row.client_order_id]
        assert row.bar_end_ms > o.bar_end_ms
        op = bars_by_key.loc[(row.symbol, row.bar_end_ms), "open"]
        fee = row.qty * row.price * cfg["fee_bps"] / 1e4
        assert math.isclose(row.fee, fee, rel_tol=1e-12)
        p0 = pos.get(row.symbol, 0.0)
        if row.side == "buy":
            assert math.isclose(row.price, op * (1 + s), rel_tol=1e-12)
            assert 0 < row.qty <= o.qty
            assert row.qty * row.price + row.fee <= cash + 1e-9
            cash -= row.qty * row.price + row.fee
            avg[row.symbol] = (p0 * avg.get(row.symbol, 0.0) + row.qty * row.price) / (p0 + row.qty)
            pos[row.symbol] = p0 + row.qty
        else:
            assert math.isclose(row.price, op * (1 - s), rel_tol=1e-12)
            assert row.qty == p0 == o.qty
            cash += row.qty * row.price - row.fee
            realized += (row.price - avg[row.symbol]) * row.qty
            pos[row.symbol], avg[row.symbol] = 0.0, 0.0
        fees += row.fee
        assert math.isclose(row.cash_after, cash, rel_tol=1e-9, abs_tol=1e-9)
        assert math.isclose(row.realized_pnl, realized, rel_tol=1e-9, abs_tol=1e-9)
        assert math.isclose(row.position_after, pos[row.symbol], rel_tol=1e-12)
        assert math.isclose(row.avg_entry_after, avg[row.symbol], rel_tol=1e-12)
        assert cash >= -1e-9

    # equity rows: one per group, equity = cash + gross, gross from positions x last close
    times = np.sort(bars.bar_end_ms.unique())
    assert (equity.bar_end_ms.to_numpy() == times).all()
    np.testing.assert_allclose(equity.equity, equity.cash + equity.gross, rtol=1e-12)
    last_close = bars.pivot(index="bar_end_ms", columns="symbol", values="close").ffill()
    fills_sorted = fills.sort_values("bar_end_ms", kind="stable")
    pos_at = (
        fills_sorted.groupby(["bar_end_ms", "symbol"])["position_after"]
        .last()
        .unstack()
        .reindex(index=times)
        .ffill()
        .reindex(columns=last_close.columns)
        .fillna(0.0)
    )
    gross = (pos_at * last_close).sum(axis=1).to_numpy()
    np.testing.assert_allclose(equity.gross, gross, rtol=1e-9, atol=1e-6)
    np.testing.assert_allclose(equity.fees_paid.iloc[-1], fills.fee.sum(), rtol=1e-9)
    if len(fills):
        assert math.isclose(equity.realized_pnl.iloc[-1], realized, rel_tol=1e-9, abs_tol=1e-9)
    sig = bars.p_up - bars.p_down
    degraded = sig.isna().groupby(bars.bar_end_ms).sum().reindex(times).to_numpy()
    assert (equity.degraded.to_numpy() == degraded).all()

    # kill-switch: fires once per day at most, sells everything held then, blocks entries
    day = (equity.bar_end_ms - 1) // 86_400_000
    flips = equity.killed & ~equity.killed.shift(fill_value=False).astype(bool)
    flips |= equity.killed & (day != day.shift())
    assert flips.groupby(day).sum().max() <= 1
    kill_times = set(equity.bar_end_ms[flips])
    ks = new[new.reason == "kill_switch"]
    assert set(ks.bar_end_ms) <= kill_times
    killed_at = dict(zip(equity.bar_end_ms, equity.killed, strict=True))
    assert not any(killed_at[t] for t in buys.bar_end_ms)
    day_start = equity.equity.shift().groupby(day).transform("first")
    day_start.iloc[0] = cfg["initial_cash"]
    for t in kill_times:
        i = int(np.flatnonzero(equity.bar_end_ms.to_numpy() == t)[0])
        assert equity.equity.iloc[i] <= day_start.iloc[i] * (1 - cfg["max_daily_loss_pct"])

    # cooldown: an entry is at least cooldown_bars of that symbol after its last exit fill
    srt = bars.sort_values(["symbol", "bar_end_ms"])
    keys = zip(srt.symbol, srt.bar_end_ms, strict=True)
    bar_idx = dict(zip(keys, srt.groupby("symbol").cumcount(), strict=True))
    exits = fills[fills.side == "sell"]
    for sym, grp in buys.groupby("symbol"):
        ex = exits[exits.symbol == sym].bar_end_ms.to_numpy()
        for t in grp.bar_end_ms:
            prior = ex[ex <= t]
            if len(prior):
                gap = bar_idx[(sym, t)] - bar_idx[(sym, int(prior.max()))]
                assert gap >= cfg["cooldown_bars"]


def test_oracle_is_deterministic_and_order_independent() -> None:
    bars = _bars("gaps")
    cfg = CONFIGS["gaps"][1]
    a = reference_backtest(bars, cfg)
    b = reference_backtest(bars.iloc[::-1].reset_index(drop=True), cfg)
    for x, y in zip(a, b, strict=True):
        pd.testing.assert_frame_equal(x, y)


# ----------------------------------------------------------------- hand-made scenarios

M = 60_000
NAN = float("nan")


def _tiny_bars(rows: list[tuple[str, int, float, float, float]]) -> pd.DataFrame:
    """(symbol, bar_end_ms, open, close, signal) -> bars with p_up/p_down giving signal."""
    df = pd.DataFrame(rows, columns=["symbol", "bar_end_ms", "open", "close", "signal"])
    df["high"] = df[["open", "close"]].max(axis=1)
    df["low"] = df[["open", "close"]].min(axis=1)
    df["p_up"] = 0.5 + df.signal / 2
    df["p_down"] = 0.5 - df.signal / 2
    return df.drop(columns="signal")


TINY: dict[str, tuple[pd.DataFrame, dict[str, Any]]] = {
    # kill-switch at T3 sells A, which has no bar at T3, at its last close; B's fill at
    # T2 and the entry sizing use the T2 equity
    "kill_without_bar": (
        _tiny_bars(
            [
                ("AAA", 1 * M, 10.0, 10.0, 0.5),
                ("BBB", 1 * M, 100.0, 100.0, NAN),
                ("AAA", 2 * M, 10.0, 10.0, 0.5),
                ("BBB", 2 * M, 100.0, 100.0, 0.5),
                ("BBB", 3 * M, 100.0, 60.0, 0.3),
                ("AAA", 4 * M, 9.0, 9.5, 0.5),
                ("BBB", 4 * M, 61.0, 62.0, 0.5),
            ]
        ),
        {
            "initial_cash": 1000.0,
            "position_fraction": 0.5,
            "max_position_notional": 1e6,
            "max_gross_notional": 1e6,
            "min_notional": 1.0,
            "fee_bps": 0.0,
            "slippage_bps": 0.0,
            "max_daily_loss_pct": 0.1,
            "stop_loss_pct": 0.9,
            "max_hold_bars": 100,
            "cooldown_bars": 0,
        },
    ),
    # two entries in one group; the second fill finds no cash: rejected; A exits by
    # max_hold (NaN signal) and re-enters at once (cooldown 0) on the fill bar
    "reject_and_max_hold": (
        _tiny_bars(
            [
                ("AAA", 1 * M, 10.0, 10.0, 0.5),
                ("BBB", 1 * M, 20.0, 20.0, 0.5),
                ("AAA", 2 * M, 10.0, 10.0, 0.5),
                ("BBB", 2 * M, 20.0, 20.0, -0.5),
                ("AAA", 3 * M, 10.0, 10.0, NAN),
                ("AAA", 4 * M, 11.0, 11.0, 0.5),
            ]
        ),
        {
            "initial_cash": 100.0,
            "position_fraction": 1.0,
            "max_position_notional": 1e6,
            "max_gross_notional": 1e6,
            "min_notional": 1.0,
            "fee_bps": 0.0,
            "slippage_bps": 0.0,
            "max_hold_bars": 2,
            "cooldown_bars": 0,
        },
    ),
}


def test_tiny_kill_without_bar() -> None:
    bars, cfg = TINY["kill_without_bar"]
    o, f, e = reference_backtest(bars, cfg)
    assert o[["client_order_id", "qty", "decision_price", "reason", "status"]].values.tolist() == [
        ["cf1-AAA-60000-buy", 50.0, 10.0, "signal_entry", "new"],
        ["cf1-BBB-120000-buy", 5.0, 100.0, "signal_entry", "new"],
        ["cf1-AAA-180000-sell", 50.0, 10.0, "kill_switch", "new"],
        ["cf1-BBB-180000-sell", 5.0, 60.0, "kill_switch", "new"],
    ]
    assert math.isnan(o.signal[2]) and o.signal[3] == pytest.approx(0.3)
    assert f[["client_order_id", "bar_end_ms", "qty", "price", "cash_after"]].values.tolist() == [
        ["cf1-AAA-60000-buy", 2 * M, 50.0, 10.0, 500.0],
        ["cf1-BBB-120000-buy", 3 * M, 5.0, 100.0, 0.0],
        ["cf1-AAA-180000-sell", 4 * M, 50.0, 9.0, 450.0],
        ["cf1-BBB-180000-sell", 4 * M, 5.0, 61.0, 755.0],
    ]
    assert f.realized_pnl.tolist() == [0.0, 0.0, -50.0, -245.0]
    assert e.equity.tolist() == [1000.0, 1000.0, 800.0, 755.0]
    assert e.killed.tolist() == [False, False, True, True]
    assert e.degraded.tolist() == [1, 0, 0, 0]


def test_tiny_reject_and_max_hold() -> None:
    bars, cfg = TINY["reject_and_max_hold"]
    o, f, e = reference_backtest(bars, cfg)
    assert o[["client_order_id", "qty", "reason", "status"]].values.tolist() == [
        ["cf1-AAA-60000-buy", 10.0, "signal_entry", "new"],
        ["cf1-BBB-60000-buy", 5.0, "signal_entry", "new"],
        ["cf1-BBB-60000-buy", 5.0, "insufficient_cash", "rejected"],
        ["cf1-AAA-180000-sell", 10.0, "max_hold", "new"],
        ["cf1-AAA-240000-buy", 10.0, "signal_entry", "new"],
    ]
    assert o.bar_end_ms.tolist() == [M, M, M, 3 * M, 4 * M]
    assert f[["client_order_id", "bar_end_ms", "qty", "price", "cash_after"]].values.tolist() == [
        ["cf1-AAA-60000-buy", 2 * M, 10.0, 10.0, 0.0],
        ["cf1-AAA-180000-sell", 4 * M, 10.0, 11.0, 110.0],
    ]
    assert e.degraded.tolist() == [0, 0, 1, 0]


# --------------------------------------------------------------------------- production


def _norm(df: pd.DataFrame, cols: list[str], keys: list[str]) -> pd.DataFrame:
    out = df[cols].copy()
    return out.sort_values(keys, kind="mergesort").reset_index(drop=True)


@pytest.mark.parametrize("name", [*CONFIGS, *TINY])
def test_production_matches_oracle(name: str) -> None:
    strategy = pytest.importorskip("udfs.strategy")
    if name in TINY:
        bars, cfg = TINY[name]
        ref_o, ref_f, ref_e = reference_backtest(bars, cfg)
    else:
        bars, cfg = _bars(CONFIGS[name][0]), CONFIGS[name][1]
        ref_o, ref_f, ref_e, _ = _oracle(name)
    o, f, e = strategy.run_batch(bars, strategy.StrategyConfig(**cfg))
    o, f, e = pd.DataFrame(o), pd.DataFrame(f), pd.DataFrame(e)

    ok = ["client_order_id", "status"]
    got_o, want_o = _norm(o, ORDER_COLUMNS, ok), _norm(ref_o, ORDER_COLUMNS, ok)
    _first_diff("orders", got_o, want_o, "client_order_id")
    got_f = _norm(f, FILL_COLUMNS, ["client_order_id"])
    want_f = _norm(ref_f, FILL_COLUMNS, ["client_order_id"])
    _first_diff("fills", got_f, want_f, "client_order_id")
    got_e, want_e = _norm(e, EQUITY_COLUMNS, ["bar_end_ms"]), ref_e
    _first_diff("equity", got_e, want_e, "bar_end_ms")

    for got, want in ((got_o, want_o), (got_f, want_f), (got_e, want_e)):
        pd.testing.assert_frame_equal(got, want, check_exact=False, rtol=1e-9, check_dtype=False)


def _first_diff(what: str, got: pd.DataFrame, want: pd.DataFrame, key: str) -> None:
    """Fail with the first (in time) differing row, production vs oracle, side by side."""
    g = got.set_index([key, "status"] if "status" in got else key)
    w = want.set_index([key, "status"] if "status" in want else key)
    only_g = g.index.difference(w.index)
    only_w = w.index.difference(g.index)
    bad: list[tuple[int, str]] = []
    for k in only_g:
        bad.append((_t(g.loc[k]), f"only in production: {k} {g.loc[k].to_dict()}"))
    for k in only_w:
        bad.append((_t(w.loc[k]), f"only in oracle: {k} {w.loc[k].to_dict()}"))
    common = g.index.intersection(w.index)
    for k in common:
        a, b = g.loc[k], w.loc[k]
        for col in w.columns:
            x, y = a[col], b[col]
            if isinstance(y, float | np.floating) or isinstance(x, float | np.floating):
                fx, fy = float(x), float(y)
                same = (math.isnan(fx) and math.isnan(fy)) or math.isclose(
                    fx, fy, rel_tol=1e-9, abs_tol=1e-9
                )
            else:
                same = x == y
            if not same:
                bad.append((_t(b), f"{k} column {col}: production={x!r} oracle={y!r}"))
                break
    if bad:
        bad.sort(key=lambda b: b[0])
        msg = "\n".join(m for _, m in bad[:10])
        pytest.fail(f"{what}: {len(bad)} differing rows; first ones:\n{msg}")


def _t(row: pd.Series) -> int:
    return int(row["bar_end_ms"]) if "bar_end_ms" in row else int(row.name)
