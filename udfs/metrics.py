"""Backtest performance metrics of the strategy (udfs/strategy_rules.md) and their plots.

Inputs are the frames of :func:`udfs.strategy.run_batch`: ``equity`` (one row per group,
step 6), ``fills`` and, for the benchmark, the input ``bars``. Return statistics come from
``empyrical`` (package ``empyrical-reloaded``) on the per-bar simple returns

    r_k = E_k / E_{k-1} - 1,   E_{-1} = initial_cash (or, when not given, r starts at k = 1)

annualised with ``periods_per_year(timeframe)`` (crypto trades every day: 365 days, so
``1m`` -> 525,600 periods a year). With n returns and P periods a year:

- total return = prod(1 + r) - 1
- CAGR = (1 + total return) ** (P / n) - 1
- Sharpe = mean(r) / std(r, ddof=1) * sqrt(P) (risk-free rate 0)
- Sortino = mean(r) * P / (sqrt(mean(min(r, 0) ** 2)) * sqrt(P)) (required return 0)
- max drawdown = min_k (V_k / max_{j<=k} V_j - 1) with V = cumulated value including the
  starting point (a number <= 0, empyrical's sign)

Trading statistics from the fills: a round trip is a sell fill (sells always close the whole
position); it wins when ``(price - avg_entry_before) * qty - fees`` > 0, fees being the sell fee
plus the fees of the buy fills that opened the position; win rate = wins / round trips;
turnover = sum(fill qty * price) / mean(equity); fees paid = sum of fill fees.

The benchmark is an equal-weight buy-and-hold of the symbols over the same bars: at the first
group ``initial_cash`` is split equally and each part follows its symbol's close from its first
close on (frictionless; a symbol without a close yet counts at its first close; missing bars
carry the last close forward).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import empyrical as ep
import numpy as np
import pandas as pd

from udfs.contract import timeframe_ms

DAY_MS = 86_400_000
YEAR_MS = 365 * DAY_MS  # crypto markets trade every day

PERF_KEYS = ("total_return", "cagr", "sharpe", "sortino", "max_drawdown")
ANNUALISED_KEYS = ("cagr", "sharpe", "sortino")
# shorter runs get no annualised figures (NaN): one day's return compounded over a year says
# nothing (a CAGR of 10,977,449 % from a +2.6 % day)
MIN_ANNUALISE_DAYS = 30.0


def periods_per_year(timeframe: str = "1m") -> float:
    """Bars a year for a 365-day market: ``1m`` -> 525600.0, ``1h`` -> 8760.0, ``1d`` -> 365.0."""
    return YEAR_MS / timeframe_ms(timeframe)


def simple_returns(values: Any, initial: float | None = None) -> np.ndarray:
    """Per-bar simple returns ``E_k / E_{k-1} - 1`` of an equity series (``initial`` = E_{-1})."""
    v = np.asarray(values, dtype=np.float64)
    if initial is not None:
        v = np.r_[float(initial), v]
    if len(v) < 2:
        return np.empty(0, dtype=np.float64)
    return v[1:] / v[:-1] - 1.0


def drawdown(values: Any) -> np.ndarray:
    """``V_k / max_{j<=k} V_j - 1`` of a value series (<= 0)."""
    v = np.asarray(values, dtype=np.float64)
    return v / np.maximum.accumulate(v) - 1.0 if len(v) else v


def performance(returns: np.ndarray, timeframe: str = "1m") -> dict[str, float]:
    """Total return, CAGR, Sharpe, Sortino and max drawdown of per-bar returns (module doc)."""
    r = np.asarray(returns, dtype=np.float64)
    ppy = periods_per_year(timeframe)
    if len(r) == 0:
        return dict.fromkeys(PERF_KEYS, math.nan)
    with np.errstate(all="ignore"):
        return {
            "total_return": float(ep.cum_returns_final(r)),
            "cagr": float(ep.annual_return(r, annualization=ppy)),
            "sharpe": float(ep.sharpe_ratio(r, annualization=ppy)),
            "sortino": float(ep.sortino_ratio(r, annualization=ppy)),
            "max_drawdown": float(ep.max_drawdown(r)),
        }


def buy_and_hold_equity(
    bars: pd.DataFrame, initial_cash: float, bar_end_ms: Any = None
) -> pd.Series:
    """Equal-weight buy-and-hold value per ``bar_end_ms`` (index) of the symbols in ``bars``.

    ``bars`` needs symbol, bar_end_ms, close; ``bar_end_ms`` (default: every one in ``bars``)
    are the times to value it at (the strategy's equity rows).
    """
    closes = bars.pivot_table(index="bar_end_ms", columns="symbol", values="close", aggfunc="last")
    closes = closes.sort_index()
    if bar_end_ms is not None:
        idx = pd.Index(np.asarray(bar_end_ms, dtype=np.int64), name="bar_end_ms")
        closes = closes.reindex(closes.index.union(idx)).ffill().reindex(idx)
    closes = closes.ffill().bfill()
    if closes.empty:
        return pd.Series(dtype=np.float64, name="buy_and_hold")
    rel = closes / closes.iloc[0]
    value = rel.mean(axis=1) * float(initial_cash)
    return value.rename("buy_and_hold").astype(np.float64)


def round_trips(fills: pd.DataFrame) -> pd.DataFrame:
    """One row per sell fill: symbol, bar_end_ms, qty, avg_entry, price, fees, pnl (net of fees).

    ``avg_entry`` is the position's average entry before the sell (the last buy fill's
    ``avg_entry_after``); ``fees`` the sell fee plus the fees of the buys that opened it.
    """
    rows: list[dict[str, Any]] = []
    open_fees: dict[str, float] = {}
    avg: dict[str, float] = {}
    sym = fills["symbol"].astype(str).tolist()
    side = fills["side"].astype(str).tolist()
    ts = fills["bar_end_ms"].to_numpy(dtype=np.int64).tolist()
    qty_ = fills["qty"].to_numpy(dtype=np.float64).tolist()
    price_ = fills["price"].to_numpy(dtype=np.float64).tolist()
    fee_ = fills["fee"].to_numpy(dtype=np.float64).tolist()
    avg_after = fills["avg_entry_after"].to_numpy(dtype=np.float64).tolist()
    for k, s in enumerate(sym):
        if side[k] == "buy":
            open_fees[s] = open_fees.get(s, 0.0) + fee_[k]
            avg[s] = avg_after[k]
            continue
        fees = open_fees.pop(s, 0.0) + fee_[k]
        entry = avg.pop(s, math.nan)
        qty, price = qty_[k], price_[k]
        rows.append(
            {
                "symbol": s,
                "bar_end_ms": ts[k],
                "qty": qty,
                "avg_entry": entry,
                "price": price,
                "fees": fees,
                "pnl": (price - entry) * qty - fees,
            }
        )
    cols = ["symbol", "bar_end_ms", "qty", "avg_entry", "price", "fees", "pnl"]
    return pd.DataFrame(rows, columns=cols)


def backtest_metrics(
    equity: pd.DataFrame,
    fills: pd.DataFrame,
    bars: pd.DataFrame | None = None,
    timeframe: str = "1m",
    initial_cash: float | None = None,
    min_annualise_days: float = MIN_ANNUALISE_DAYS,
) -> dict[str, Any]:
    """Strategy metrics and (with ``bars``) the same return metrics of buy-and-hold (``bh_*``).

    Keys: periods, periods_per_year, days, annualised, final_equity, total_return, cagr,
    sharpe, sortino, max_drawdown, round_trips, win_rate, turnover, fill_notional, fees_paid,
    and with bars bh_final_equity, bh_total_return, bh_cagr, bh_sharpe, bh_sortino,
    bh_max_drawdown. NaN where undefined (no returns, no round trips, zero dispersion) and,
    for CAGR, Sharpe and Sortino, when the run covers fewer than ``min_annualise_days``.
    """
    values = equity["equity"].to_numpy(dtype=np.float64)
    out: dict[str, Any] = {
        "periods": len(values),
        "periods_per_year": periods_per_year(timeframe),
        "final_equity": float(values[-1]) if len(values) else math.nan,
    }
    out.update(performance(simple_returns(values, initial_cash), timeframe))
    trips = round_trips(fills)
    notional = float((fills["qty"] * fills["price"]).sum()) if len(fills) else 0.0
    mean_equity = float(values.mean()) if len(values) else math.nan
    out.update(
        {
            "round_trips": len(trips),
            "win_rate": float((trips["pnl"] > 0).mean()) if len(trips) else math.nan,
            "turnover": notional / mean_equity if len(values) else math.nan,
            "fill_notional": notional,
            "fees_paid": float(fills["fee"].sum()) if len(fills) else 0.0,
        }
    )
    if bars is not None:
        base = initial_cash if initial_cash is not None else (values[0] if len(values) else 1.0)
        bh = buy_and_hold_equity(bars, float(base), equity["bar_end_ms"]).to_numpy()
        out["bh_final_equity"] = float(bh[-1]) if len(bh) else math.nan
        bh_perf = performance(simple_returns(bh, initial_cash), timeframe)
        out.update({f"bh_{k}": v for k, v in bh_perf.items()})
    out["days"] = len(values) / out["periods_per_year"] * 365.0
    out["annualised"] = out["days"] >= min_annualise_days
    if not out["annualised"]:
        for k in ANNUALISED_KEYS:
            out[k] = math.nan
            if f"bh_{k}" in out:
                out[f"bh_{k}"] = math.nan
    return out


def plot_backtest(
    equity: pd.DataFrame,
    buy_and_hold: pd.Series | None,
    out_dir: Path,
    title: str = "strategy vs equal-weight buy-and-hold",
) -> tuple[Path, Path]:
    """Write ``equity_curve.png`` and ``drawdown.png`` (Agg canvas) into ``out_dir``.

    ``buy_and_hold`` is :func:`buy_and_hold_equity` valued at ``equity["bar_end_ms"]`` (or
    None for the strategy alone). Returns the two paths.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_dir.mkdir(parents=True, exist_ok=True)
    t = pd.to_datetime(equity["bar_end_ms"].to_numpy(dtype=np.int64), unit="ms", utc=True)
    series = {"strategy": equity["equity"].to_numpy(dtype=np.float64)}
    if buy_and_hold is not None:
        series["buy-and-hold (equal weight)"] = np.asarray(buy_and_hold, dtype=np.float64)

    paths = (out_dir / "equity_curve.png", out_dir / "drawdown.png")
    for path, ylabel, fn in (
        (paths[0], "equity (USDT)", lambda v: v),
        (paths[1], "drawdown (%)", lambda v: drawdown(v) * 100.0),
    ):
        fig = Figure(figsize=(10, 4.5))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot(1, 1, 1)
        for name, v in series.items():
            y = fn(v)
            (line,) = ax.plot(t, y, lw=1, label=name)
            if path == paths[1]:
                ax.fill_between(t, y, 0, color=line.get_color(), alpha=0.15)
        ax.set_title(f"{title}: {ylabel.split(' ')[0]}")
        ax.set_ylabel(ylabel)
        ax.set_xlabel("bar end (UTC)")
        ax.grid(alpha=0.3)
        ax.legend(loc="best")
        fig.autofmt_xdate()
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    return paths
