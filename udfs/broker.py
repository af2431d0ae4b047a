"""Paper broker: pending orders, fills, positions, cash and P&L of one long-only spot account.

The rules are in ``udfs/strategy_rules.md`` (the contract): step 1 (fills at the next bar's
open with slippage and fee, buy quantity capped by cash, rejection on insufficient cash,
weighted average entry, realized P&L without fees) and step 2 (marks, equity). The float
formulas below are written exactly as in that file, operand for operand, because an
independent re-implementation must produce bit-identical numbers.

Pure Python (no numpy, no pyflink): :class:`udfs.strategy.StrategyEngine` drives it.
"""

from __future__ import annotations

import math
from typing import Any

BUY = "buy"
SELL = "sell"
REJECTED = "rejected"
INSUFFICIENT_CASH = "insufficient_cash"


def floor_step(x: float, step: float) -> float:
    """``floor(x / step + 1e-9) * step`` (strategy_rules.md; the ``1e-9`` absorbs float noise)."""
    return math.floor(x / step + 1e-9) * step


def _nan_to_none(v: float) -> float | None:
    return None if math.isnan(v) else v


def _none_to_nan(v: Any) -> float:
    return math.nan if v is None else float(v)


def order_to_state(order: dict[str, Any]) -> dict[str, Any]:
    """An order dict in strict-JSON form (its NaN ``signal`` as ``None``)."""
    out = dict(order)
    out["signal"] = _nan_to_none(float(order["signal"]))
    return out


def order_from_state(d: dict[str, Any]) -> dict[str, Any]:
    """Inverse of :func:`order_to_state`, with the field types of a fresh order."""
    return {
        "client_order_id": str(d["client_order_id"]),
        "symbol": str(d["symbol"]),
        "bar_end_ms": int(d["bar_end_ms"]),
        "side": str(d["side"]),
        "qty": float(d["qty"]),
        "decision_price": float(d["decision_price"]),
        "reason": str(d["reason"]),
        "signal": _none_to_nan(d["signal"]),
        "status": str(d["status"]),
    }


class PaperBroker:
    """Cash, positions, average entries, last closes and at most one pending order per symbol.

    Sums over symbols (:meth:`gross`, :meth:`pending_buy_notional`) add left to right from
    0.0 in ascending symbol order over every symbol seen so far (strategy_rules.md).
    """

    def __init__(
        self,
        initial_cash: float,
        fee_bps: float,
        slippage_bps: float,
        qty_step: float,
        state: dict[str, Any] | None = None,
    ) -> None:
        self.fee_bps = float(fee_bps)
        self.slippage_bps = float(slippage_bps)
        self.qty_step = float(qty_step)
        self.cash = float(initial_cash)
        self.realized_pnl = 0.0
        self.fees_paid = 0.0
        self.position: dict[str, float] = {}
        self.avg_entry: dict[str, float] = {}
        self.last_close: dict[str, float] = {}
        self.pending: dict[str, dict[str, Any]] = {}
        self._symbols: list[str] = []  # every symbol seen, ascending
        if state is not None:
            self._load(state)

    # -- symbols --------------------------------------------------------------------------

    @property
    def symbols(self) -> list[str]:
        """Every symbol seen so far, ascending (a copy)."""
        return list(self._symbols)

    def _ensure(self, symbol: str) -> None:
        if symbol not in self.position:
            self.position[symbol] = 0.0
            self.avg_entry[symbol] = 0.0
            self._symbols.append(symbol)
            self._symbols.sort()

    # -- orders ---------------------------------------------------------------------------

    def submit(self, order: dict[str, Any]) -> None:
        """Make ``order`` the symbol's pending order (it fills at the symbol's next bar)."""
        symbol = order["symbol"]
        if symbol in self.pending:
            raise ValueError(f"{symbol} already has a pending order")
        self._ensure(symbol)
        self.pending[symbol] = dict(order)

    def fill_pending(
        self, symbol: str, bar_end_ms: int, open_: float
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """Fill (or reject) the symbol's pending order at this bar's open (rules step 1).

        Returns ``(fill, None)`` or ``(None, rejected_order)``; the pending order is cleared.
        """
        order = self.pending.pop(symbol)
        s = self.slippage_bps / 1e4
        pos = self.position[symbol]
        avg = self.avg_entry[symbol]
        if order["side"] == BUY:
            price = open_ * (1 + s)
            qty = min(
                float(order["qty"]),
                floor_step(self.cash / (price * (1 + self.fee_bps / 1e4)), self.qty_step),
            )
            if qty <= 0:
                return None, dict(order, status=REJECTED, reason=INSUFFICIENT_CASH)
            fee = qty * price * self.fee_bps / 1e4
            self.cash -= qty * price + fee
            self.avg_entry[symbol] = (pos * avg + qty * price) / (pos + qty)
            self.position[symbol] = pos + qty
        else:
            if pos <= 0:  # cannot happen: a sell is only decided while holding
                raise RuntimeError(f"sell order {order['client_order_id']} without a position")
            price = open_ * (1 - s)
            qty = pos
            fee = qty * price * self.fee_bps / 1e4
            self.cash += qty * price - fee
            self.realized_pnl += (price - avg) * qty
            self.position[symbol] = 0.0
            self.avg_entry[symbol] = 0.0
        self.fees_paid += fee
        fill = {
            "client_order_id": order["client_order_id"],
            "symbol": symbol,
            "bar_end_ms": int(bar_end_ms),
            "side": order["side"],
            "qty": qty,
            "price": price,
            "fee": fee,
            "position_after": self.position[symbol],
            "avg_entry_after": self.avg_entry[symbol],
            "realized_pnl": self.realized_pnl,
            "cash_after": self.cash,
        }
        return fill, None

    def pending_buy_notional(self) -> float:
        """``sum(pending buy qty * decision_price)`` in ascending symbol order."""
        total = 0.0
        for s in self._symbols:
            o = self.pending.get(s)
            if o is not None and o["side"] == BUY:
                total += o["qty"] * o["decision_price"]
        return total

    # -- marks ----------------------------------------------------------------------------

    def mark(self, symbol: str, close: float) -> None:
        """``last_close[symbol] = close`` (rules step 2)."""
        self._ensure(symbol)
        self.last_close[symbol] = close

    def gross(self) -> float:
        """``sum(position[s] * last_close[s])`` in ascending symbol order."""
        total = 0.0
        for s in self._symbols:
            c = self.last_close.get(s)
            if c is not None:
                total += self.position[s] * c
        return total

    def equity(self) -> float:
        """``cash + gross()``."""
        return self.cash + self.gross()

    # -- state ----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """Strict-JSON snapshot (floats round-trip exactly through ``json``)."""
        return {
            "cash": self.cash,
            "realized_pnl": self.realized_pnl,
            "fees_paid": self.fees_paid,
            "position": dict(self.position),
            "avg_entry": dict(self.avg_entry),
            "last_close": dict(self.last_close),
            "pending": {s: order_to_state(o) for s, o in self.pending.items()},
        }

    def _load(self, st: dict[str, Any]) -> None:
        self.cash = float(st["cash"])
        self.realized_pnl = float(st["realized_pnl"])
        self.fees_paid = float(st["fees_paid"])
        self.position = {str(k): float(v) for k, v in st["position"].items()}
        self.avg_entry = {str(k): float(v) for k, v in st["avg_entry"].items()}
        self.last_close = {str(k): float(v) for k, v in st["last_close"].items()}
        self.pending = {str(k): order_from_state(v) for k, v in st["pending"].items()}
        if set(self.avg_entry) != set(self.position) or not (
            set(self.last_close) | set(self.pending)
        ) <= set(self.position):
            raise ValueError("inconsistent broker state")
        self._symbols = sorted(self.position)
