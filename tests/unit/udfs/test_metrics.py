"""Backtest metrics (udfs/metrics.py) against numbers computed by hand on tiny series."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from udfs.metrics import (
    backtest_metrics,
    buy_and_hold_equity,
    drawdown,
    performance,
    periods_per_year,
    plot_backtest,
    round_trips,
    simple_returns,
)

# equity 100 -> 100 -> 110 -> 99 -> 108.9: returns 0, +10%, -10%, +10%
EQUITY = [100.0, 110.0, 99.0, 108.9]


def test_periods_per_year_is_a_365_day_year() -> None:
    assert periods_per_year("1m") == 525_600.0
    assert periods_per_year("5m") == 105_120.0
    assert periods_per_year("1h") == 8_760.0
    assert periods_per_year("1d") == 365.0
    for bad in ("1x", "m", "0m", "1M"):
        with pytest.raises(ValueError):
            periods_per_year(bad)


def test_returns_and_drawdown() -> None:
    assert simple_returns(EQUITY, 100.0) == pytest.approx([0.0, 0.1, -0.1, 0.1])
    assert simple_returns(EQUITY) == pytest.approx([0.1, -0.1, 0.1])
    assert len(simple_returns([100.0])) == 0
    assert drawdown(EQUITY) == pytest.approx([0.0, 0.0, -0.1, -0.01])


def test_performance_hand_computed() -> None:
    m = performance(simple_returns(EQUITY, 100.0), "1d")
    # total: 108.9 / 100 - 1
    assert m["total_return"] == pytest.approx(0.089)
    # CAGR over 4 daily periods of a 365-day year: 1.089 ** (365 / 4) - 1
    assert m["cagr"] == pytest.approx(1.089 ** (365 / 4) - 1)
    assert m["cagr"] == pytest.approx(2391.18, rel=1e-5)
    # mean 0.025; sample std sqrt((0.025^2 + 0.075^2 + 0.125^2 + 0.075^2) / 3) = 0.0957427
    assert m["sharpe"] == pytest.approx(0.025 / math.sqrt(0.0275 / 3) * math.sqrt(365))
    assert m["sharpe"] == pytest.approx(4.98861, rel=1e-5)
    # downside deviation sqrt((0 + 0 + 0.01 + 0) / 4) = 0.05; 0.025 * 365 / (0.05 * sqrt(365))
    assert m["sortino"] == pytest.approx(0.5 * math.sqrt(365))
    assert m["sortino"] == pytest.approx(9.552487)
    # peak 110 -> trough 99
    assert m["max_drawdown"] == pytest.approx(-0.1)
    # 1m bars annualise with 525,600 periods: Sharpe scales with sqrt(periods)
    m1 = performance(simple_returns(EQUITY, 100.0), "1m")
    assert m1["sharpe"] == pytest.approx(m["sharpe"] * math.sqrt(525_600 / 365))
    assert all(math.isnan(v) for v in performance(np.empty(0), "1m").values())


def _fills() -> pd.DataFrame:
    rows = [
        # symbol, side, qty, price, fee, avg_entry_after
        ("AAA", "buy", 2.0, 100.0, 0.2, 100.0),
        ("BBB", "buy", 1.0, 50.0, 0.05, 50.0),
        ("AAA", "sell", 2.0, 110.0, 0.22, 0.0),  # (110 - 100) * 2 - 0.42 = 19.58: win
        ("BBB", "sell", 1.0, 50.05, 0.05005, 0.0),  # 0.05 - 0.10005 = -0.05005: loss after fees
        ("AAA", "buy", 1.0, 120.0, 0.12, 120.0),  # still open: not a round trip
    ]
    return pd.DataFrame(
        [
            {
                "client_order_id": f"cf1-{s}-{k}-{side}",
                "symbol": s,
                "bar_end_ms": k,
                "side": side,
                "qty": q,
                "price": p,
                "fee": fee,
                "position_after": 0.0,
                "avg_entry_after": avg,
                "realized_pnl": 0.0,
                "cash_after": 0.0,
            }
            for k, (s, side, q, p, fee, avg) in enumerate(rows)
        ]
    )


def test_round_trips_net_of_both_fees() -> None:
    rt = round_trips(_fills())
    assert list(rt["symbol"]) == ["AAA", "BBB"]
    assert list(rt["avg_entry"]) == [100.0, 50.0]
    assert rt["fees"].tolist() == pytest.approx([0.42, 0.10005])
    assert rt["pnl"].tolist() == pytest.approx([19.58, -0.05005])


def _bars() -> pd.DataFrame:
    # X: 10, 11, 12, 9; Y: 100, 80, (missing -> 80), 120
    rows = [("X", 1, 10.0), ("X", 2, 11.0), ("X", 3, 12.0), ("X", 4, 9.0)]
    rows += [("Y", 1, 100.0), ("Y", 2, 80.0), ("Y", 4, 120.0)]
    return pd.DataFrame(rows, columns=["symbol", "bar_end_ms", "close"])


def test_equal_weight_buy_and_hold() -> None:
    bh = buy_and_hold_equity(_bars(), 1000.0, [1, 2, 3, 4])
    # 1000 * mean(X / 10, Y / 100): 1000, (1.1 + 0.8) / 2, (1.2 + 0.8) / 2, (0.9 + 1.2) / 2
    assert bh.index.tolist() == [1, 2, 3, 4]
    assert bh.tolist() == pytest.approx([1000.0, 950.0, 1000.0, 1050.0])


def test_backtest_metrics_hand_computed() -> None:
    equity = pd.DataFrame({"bar_end_ms": [1, 2, 3, 4], "equity": [v * 10 for v in EQUITY]})
    m = backtest_metrics(
        equity, _fills(), _bars(), timeframe="1d", initial_cash=1000.0, min_annualise_days=0
    )
    assert m["periods"] == 4 and m["periods_per_year"] == 365.0
    assert m["final_equity"] == pytest.approx(1089.0)
    assert m["total_return"] == pytest.approx(0.089)
    assert m["sharpe"] == pytest.approx(4.98861, rel=1e-5)
    assert m["max_drawdown"] == pytest.approx(-0.1)
    assert m["round_trips"] == 2 and m["win_rate"] == 0.5
    # notional 200 + 50 + 220 + 50.05 + 120 = 640.05; mean equity 1044.75
    assert m["fill_notional"] == pytest.approx(640.05)
    assert m["turnover"] == pytest.approx(640.05 / 1044.75)
    assert m["fees_paid"] == pytest.approx(0.64005)
    # buy-and-hold 1000, 950, 1000, 1050: returns 0, -5%, +5.263%, +5%
    bh_r = np.array([0.0, -0.05, 1000 / 950 - 1, 0.05])
    assert m["bh_final_equity"] == pytest.approx(1050.0)
    assert m["bh_total_return"] == pytest.approx(0.05)
    assert m["bh_cagr"] == pytest.approx(1.05 ** (365 / 4) - 1)
    assert m["bh_sharpe"] == pytest.approx(bh_r.mean() / bh_r.std(ddof=1) * math.sqrt(365))
    downside = math.sqrt(0.05**2 / 4)
    assert m["bh_sortino"] == pytest.approx(bh_r.mean() * 365 / (downside * math.sqrt(365)))
    assert m["bh_max_drawdown"] == pytest.approx(-0.05)


def test_backtest_metrics_without_trades() -> None:
    equity = pd.DataFrame({"bar_end_ms": [1, 2], "equity": [1000.0, 1000.0]})
    fills = _fills().iloc[0:0]
    m = backtest_metrics(equity, fills, timeframe="1m")
    assert m["total_return"] == 0.0 and m["max_drawdown"] == 0.0
    assert m["round_trips"] == 0 and math.isnan(m["win_rate"])
    assert m["turnover"] == 0.0 and m["fees_paid"] == 0.0
    assert "bh_total_return" not in m


def test_plot_backtest_writes_pngs(tmp_path: Path) -> None:
    equity = pd.DataFrame(
        {"bar_end_ms": [1_617_321_660_000 + 60_000 * k for k in range(4)], "equity": EQUITY}
    )
    bh = pd.Series([100.0, 95.0, 100.0, 105.0])
    paths = plot_backtest(equity, bh, tmp_path / "plots")
    assert [p.name for p in paths] == ["equity_curve.png", "drawdown.png"]
    for p in paths:
        data = p.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
    assert plot_backtest(equity, None, tmp_path / "alone")[0].exists()


def test_no_annualised_figures_under_30_days() -> None:
    """4 daily bars: CAGR, Sharpe and Sortino (strategy and buy-and-hold) are NaN; the
    plain figures stay. 30 daily bars are annualised."""
    equity = pd.DataFrame({"bar_end_ms": [1, 2, 3, 4], "equity": [v * 10 for v in EQUITY]})
    m = backtest_metrics(equity, _fills(), _bars(), timeframe="1d", initial_cash=1000.0)
    assert m["days"] == pytest.approx(4.0) and m["annualised"] is False
    for k in ("cagr", "sharpe", "sortino", "bh_cagr", "bh_sharpe", "bh_sortino"):
        assert math.isnan(m[k]), k
    assert m["total_return"] == pytest.approx(0.089)
    assert m["bh_total_return"] == pytest.approx(0.05)
    month = pd.DataFrame({"bar_end_ms": range(30), "equity": np.linspace(1000.0, 1100.0, 30)})
    m = backtest_metrics(month, _fills().iloc[:0], None, timeframe="1d", initial_cash=1000.0)
    assert m["annualised"] is True and m["cagr"] == pytest.approx(1.1 ** (365 / 30) - 1)
