"""Independent reference implementation ("oracle") of ``udfs/strategy_rules.md``.

Written from the md alone, array-oriented: the whole history is pivoted once into
(time x symbol) numpy matrices (open, close, signal, presence, per-symbol bar index), day
boundaries and degraded counts are computed with pandas up front, and only the
path-dependent account state (cash, positions, pending orders, kill-switch) is carried
through one explicit loop over the time groups. It shares no code with
``udfs/strategy.py``; the tests require both to produce the same orders, fills and equity.

Readings chosen where the md leaves room (see the test module's docstring too):

* A rejected buy re-emits the order row unchanged (same ``client_order_id``, ``bar_end_ms``
  of the decision bar, ``qty``, ``decision_price``, ``signal``) except ``status =
  "rejected"`` and ``reason = "insufficient_cash"`` (step 1 names that reason).
* A kill-switch order's ``signal`` is the signal of the symbol's row at T when it has one
  (NaN if that row is degraded), NaN when the symbol has no bar at T.
* A row is degraded when ``p_up - p_down`` is NaN (either probability missing).

(The first two were later written into the md in the same sense.)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

DEFAULTS: dict[str, Any] = {
    "initial_cash": 10_000.0,
    "entry_threshold": 0.10,
    "exit_threshold": 0.0,
    "position_fraction": 0.10,
    "max_position_notional": 2_000.0,
    "max_gross_notional": 6_000.0,
    "min_notional": 10.0,
    "qty_step": 1e-6,
    "cooldown_bars": 5,
    "max_hold_bars": 15,
    "stop_loss_pct": 0.02,
    "max_daily_loss_pct": 0.03,
    "fee_bps": 10.0,
    "slippage_bps": 2.0,
    "strategy_id": "cf1",
}

ORDER_COLUMNS = [
    "client_order_id",
    "symbol",
    "bar_end_ms",
    "side",
    "qty",
    "decision_price",
    "reason",
    "signal",
    "status",
]
FILL_COLUMNS = [
    "client_order_id",
    "symbol",
    "bar_end_ms",
    "side",
    "qty",
    "price",
    "fee",
    "position_after",
    "avg_entry_after",
    "realized_pnl",
    "cash_after",
]
EQUITY_COLUMNS = [
    "bar_end_ms",
    "cash",
    "equity",
    "gross",
    "realized_pnl",
    "fees_paid",
    "killed",
    "degraded",
]

DAY_MS = 86_400_000


def _pivot(bars: pd.DataFrame) -> dict[str, Any]:
    """Whole-history precomputation: (time x symbol) matrices and per-group series."""
    df = bars[["symbol", "bar_end_ms", "open", "close", "p_up", "p_down"]].copy()
    df["bar_end_ms"] = df["bar_end_ms"].astype("int64")
    df["symbol"] = df["symbol"].astype(str)
    if df.duplicated(["symbol", "bar_end_ms"]).any():
        raise ValueError("duplicate (symbol, bar_end_ms) rows")
    df["signal"] = df["p_up"].astype("float64") - df["p_down"].astype("float64")
    df = df.sort_values(["symbol", "bar_end_ms"], kind="mergesort")
    df["bar_i"] = df.groupby("symbol", sort=False).cumcount()

    symbols = sorted(df["symbol"].unique().tolist())
    times = np.sort(df["bar_end_ms"].unique())

    def mat(col: str) -> np.ndarray:
        p = df.pivot(index="bar_end_ms", columns="symbol", values=col)
        return p.reindex(index=times, columns=symbols).to_numpy(dtype="float64")

    present = ~np.isnan(mat("bar_i"))
    # UTC day the bar belongs to = floor((bar_end_ms - 1) / day); a new day starts a group
    # whose day differs from the previous group's (and the first group).
    day = (times - 1) // DAY_MS
    new_day = np.ones(len(times), dtype=bool)
    new_day[1:] = day[1:] != day[:-1]
    degraded = (
        df["signal"].isna().groupby(df["bar_end_ms"]).sum().reindex(times).to_numpy(dtype="int64")
    )
    return {
        "symbols": symbols,
        "times": times,
        "open": mat("open"),
        "close": mat("close"),
        "signal": mat("signal"),
        "bar_i": mat("bar_i"),
        "present": present,
        "new_day": new_day,
        "degraded": degraded,
    }


def reference_backtest(
    bars: pd.DataFrame, cfg: dict[str, Any] | None = None, stats: dict[str, int] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Run the md's rules over ``bars``; return (orders, fills, equity).

    ``stats`` (optional, filled in place) counts how often each rule fired or blocked, so
    the tests can check that their configs exercise every rule.
    """
    c = {**DEFAULTS, **(cfg or {})}
    unknown = set(c) - set(DEFAULTS)
    if unknown:
        raise KeyError(f"unknown strategy parameters: {sorted(unknown)}")
    step = float(c["qty_step"])
    fee_rate = float(c["fee_bps"]) / 1e4
    s = float(c["slippage_bps"]) / 1e4
    entry_th = float(c["entry_threshold"])
    exit_th = float(c["exit_threshold"])
    sid = str(c["strategy_id"])

    def floor_step(x: float) -> float:
        return math.floor(x / step + 1e-9) * step

    st: dict[str, int] = stats if stats is not None else {}
    for k in (
        "signal_entry",
        "signal_exit",
        "max_hold",
        "stop_loss",
        "kill_switch",
        "kill_switch_no_bar",
        "kill_switch_events",
        "rejected",
        "partial_buy_fill",
        "cooldown_block",
        "killed_block",
        "gross_full_block",
        "min_notional_skip",
        "max_position_binding",
        "max_gross_binding",
        "max_hold_kept_by_signal",
        "degraded_holding_exit",
        "fill_after_gap",
        "pending_at_end",
    ):
        st[k] = 0

    P = _pivot(bars)
    symbols: list[str] = P["symbols"]
    times: np.ndarray = P["times"]
    OPN, CLS, SIG, BI, PRES = P["open"], P["close"], P["signal"], P["bar_i"], P["present"]
    n_t, n_s = CLS.shape

    # account state (per-symbol arrays; pending order as index into `orders`, -1 = none)
    cash = float(c["initial_cash"])
    realized = 0.0
    fees_paid = 0.0
    pos = np.zeros(n_s)
    avg = np.zeros(n_s)
    last_close = np.full(n_s, np.nan)
    entry_bar = np.zeros(n_s, dtype=np.int64)
    last_exit_bar = np.full(n_s, -1, dtype=np.int64)
    has_exited = np.zeros(n_s, dtype=bool)
    pending = np.full(n_s, -1, dtype=np.int64)
    pending_t = np.zeros(n_s, dtype=np.int64)  # group index of the decision
    killed = False
    day_start_equity = float(c["initial_cash"])
    prev_equity = float(c["initial_cash"])

    orders: list[dict[str, Any]] = []
    fills: list[dict[str, Any]] = []
    eq_rows: list[tuple[Any, ...]] = []

    # the md's sums: plain left-to-right float64 additions from 0.0 in symbol order
    def held_value() -> float:
        tot = 0.0
        for j in range(n_s):
            if pos[j] != 0.0:
                tot += float(pos[j] * last_close[j])
        return tot

    def pending_buy_notional() -> float:
        tot = 0.0
        for j in range(n_s):
            k = pending[j]
            if k >= 0 and orders[k]["side"] == "buy":
                tot += orders[k]["qty"] * orders[k]["decision_price"]
        return tot

    def place(j: int, t: int, side: str, qty: float, price: float, reason: str, sig: float):
        T = int(times[t])
        orders.append(
            {
                "client_order_id": f"{sid}-{symbols[j]}-{T}-{side}",
                "symbol": symbols[j],
                "bar_end_ms": T,
                "side": side,
                "qty": qty,
                "decision_price": price,
                "reason": reason,
                "signal": sig,
                "status": "new",
            }
        )
        pending[j] = len(orders) - 1
        pending_t[j] = t
        st[reason] += 1

    for t in range(n_t):
        T = int(times[t])
        here = np.flatnonzero(PRES[t])  # symbol columns with a bar at T, in symbol order

        # 1. fills at this bar's open
        for j in here:
            k = pending[j]
            if k < 0:
                continue
            o = orders[k]
            bi = int(BI[t, j])
            if not PRES[pending_t[j] + 1, j]:
                st["fill_after_gap"] += 1
            if o["side"] == "buy":
                price = OPN[t, j] * (1 + s)
                qty = min(o["qty"], floor_step(cash / (price * (1 + fee_rate))))
                if qty == 0:
                    orders.append({**o, "status": "rejected", "reason": "insufficient_cash"})
                    st["rejected"] += 1
                    pending[j] = -1
                    continue
                if qty < o["qty"]:
                    st["partial_buy_fill"] += 1
                fee = qty * price * c["fee_bps"] / 1e4
                cash -= qty * price + fee
                avg[j] = (pos[j] * avg[j] + qty * price) / (pos[j] + qty)
                pos[j] += qty
                entry_bar[j] = bi
            else:
                price = OPN[t, j] * (1 - s)
                qty = pos[j]
                fee = qty * price * c["fee_bps"] / 1e4
                cash += qty * price - fee
                realized += (price - avg[j]) * qty
                pos[j] = 0.0
                avg[j] = 0.0
                last_exit_bar[j] = bi
                has_exited[j] = True
            fees_paid += fee
            pending[j] = -1
            fills.append(
                {
                    "client_order_id": o["client_order_id"],
                    "symbol": symbols[j],
                    "bar_end_ms": T,
                    "side": o["side"],
                    "qty": qty,
                    "price": price,
                    "fee": fee,
                    "position_after": pos[j],
                    "avg_entry_after": avg[j],
                    "realized_pnl": realized,
                    "cash_after": cash,
                }
            )

        # 2. marks
        last_close[here] = CLS[t, here]
        equity = cash + held_value()

        # 3. day roll
        if P["new_day"][t]:
            day_start_equity = prev_equity if t > 0 else float(c["initial_cash"])
            killed = False

        # 4. kill-switch
        if not killed and equity <= day_start_equity * (1 - c["max_daily_loss_pct"]):
            killed = True
            st["kill_switch_events"] += 1
            for j in range(n_s):
                if pos[j] > 0 and pending[j] < 0:
                    sig = SIG[t, j] if PRES[t, j] else np.nan
                    if not PRES[t, j]:
                        st["kill_switch_no_bar"] += 1
                    place(j, t, "sell", pos[j], last_close[j], "kill_switch", sig)

        # 5. decisions
        for j in here:
            if pending[j] >= 0:
                continue
            close = CLS[t, j]
            sig = SIG[t, j]
            bi = int(BI[t, j])
            nan_sig = math.isnan(sig)
            if pos[j] > 0:
                reason = None
                if close <= avg[j] * (1 - c["stop_loss_pct"]):
                    reason = "stop_loss"
                elif bi - entry_bar[j] + 1 >= c["max_hold_bars"] and not (
                    not nan_sig and sig >= entry_th
                ):
                    reason = "max_hold"
                elif not nan_sig and sig <= exit_th:
                    reason = "signal_exit"
                elif bi - entry_bar[j] + 1 >= c["max_hold_bars"]:
                    st["max_hold_kept_by_signal"] += 1
                if reason is not None:
                    if nan_sig:
                        st["degraded_holding_exit"] += 1
                    place(j, t, "sell", pos[j], close, reason, sig)
                continue
            # flat
            if nan_sig or not sig >= entry_th:
                continue
            if killed:
                st["killed_block"] += 1
                continue
            if has_exited[j] and bi - last_exit_bar[j] < c["cooldown_bars"]:
                st["cooldown_block"] += 1
                continue
            gross = held_value() + pending_buy_notional()
            headroom = c["max_gross_notional"] - gross
            if headroom <= 0:
                st["gross_full_block"] += 1
                continue
            target = min(c["position_fraction"] * equity, c["max_position_notional"], headroom)
            qty = floor_step(target / close)
            if not qty * close >= c["min_notional"]:
                st["min_notional_skip"] += 1
                continue
            if target == headroom and headroom < c["position_fraction"] * equity:
                st["max_gross_binding"] += 1
            elif (
                target == c["max_position_notional"]
                and c["max_position_notional"] < c["position_fraction"] * equity
            ):
                st["max_position_binding"] += 1
            place(j, t, "buy", qty, close, "signal_entry", sig)

        # 6. snapshot
        eq_rows.append(
            (T, cash, equity, held_value(), realized, fees_paid, killed, int(P["degraded"][t]))
        )
        prev_equity = equity

    st["pending_at_end"] = int((pending >= 0).sum())

    orders_df = pd.DataFrame(orders, columns=ORDER_COLUMNS)
    fills_df = pd.DataFrame(fills, columns=FILL_COLUMNS)
    equity_df = pd.DataFrame(eq_rows, columns=EQUITY_COLUMNS)
    for df_, ints in ((orders_df, ["bar_end_ms"]), (fills_df, ["bar_end_ms"])):
        for col in ints:
            df_[col] = df_[col].astype("int64")
    for col in ("qty", "decision_price", "signal"):
        orders_df[col] = orders_df[col].astype("float64")
    for col in FILL_COLUMNS[4:]:
        fills_df[col] = fills_df[col].astype("float64")
    equity_df["bar_end_ms"] = equity_df["bar_end_ms"].astype("int64")
    equity_df["killed"] = equity_df["killed"].astype(bool)
    equity_df["degraded"] = equity_df["degraded"].astype("int64")
    return orders_df, fills_df, equity_df
