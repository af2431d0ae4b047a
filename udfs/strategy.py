"""The strategy: event-driven, one group of bars (one ``bar_end_ms``) at a time, snapshot-able.

``udfs/strategy_rules.md`` is the contract; this module implements it literally (processing
order 1-6, float formulas operand for operand, ``floor_step`` with ``+1e-9``, client order id
format, which price is used where). ``tests/reference_strategy.py`` re-implements the same
file independently and the tests require identical orders, fills and equity.

Pure Python + pandas (no pyflink import): the Flink strategy job wraps
:class:`StrategyEngine`; :func:`run_batch` runs it over a whole DataFrame (backtests).
The fills, positions, cash and P&L live in :class:`udfs.broker.PaperBroker`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from udfs.broker import BUY, SELL, PaperBroker, floor_step
from udfs.topics import STRATEGY_KEYS, pandas_dtypes

DAY_MS = 86_400_000
STATE_VERSION = 1

# the paper broker's frames: the topic models (udfs/topics.py) less the keys the job adds
ORDER_COLUMNS: dict[str, str] = pandas_dtypes("orders", without=STRATEGY_KEYS)
FILL_COLUMNS: dict[str, str] = pandas_dtypes("fills", without=STRATEGY_KEYS)
EQUITY_COLUMNS: dict[str, str] = pandas_dtypes("equity", without=STRATEGY_KEYS)
BAR_COLUMNS = ("symbol", "bar_end_ms", "open", "high", "low", "close", "p_up", "p_down")


class StrategyConfig(BaseModel):
    """Strategy + paper-broker parameters; names and defaults are the table in strategy_rules.md."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    initial_cash: float = Field(10_000.0, gt=0, description="quote currency (USDT) at start")
    entry_threshold: float = Field(0.10, description="enter when signal >= this")
    exit_threshold: float = Field(0.0, description="signal exit when signal <= this")
    position_fraction: float = Field(0.10, gt=0, description="entry notional = this x equity")
    max_position_notional: float = Field(2_000.0, gt=0, description="per symbol qty*close cap")
    max_gross_notional: float = Field(6_000.0, gt=0, description="account gross notional cap")
    min_notional: float = Field(10.0, gt=0, description="smaller entries are not placed")
    qty_step: float = Field(1e-6, gt=0, description="quantities are floored to this step")
    cooldown_bars: int = Field(5, ge=0, description="bars of the symbol after an exit fill")
    max_hold_bars: int = Field(15, ge=1, description="exit after this many bars held")
    stop_loss_pct: float = Field(0.02, ge=0, lt=1, description="stop below avg_entry")
    max_daily_loss_pct: float = Field(0.03, ge=0, lt=1, description="daily kill-switch")
    fee_bps: float = Field(10.0, ge=0, description="fee on every fill")
    slippage_bps: float = Field(2.0, ge=0, lt=10_000, description="fill price slippage")
    strategy_id: str = Field("cf1", pattern=r"^[A-Za-z0-9_]{1,32}$", description="id prefix")


@dataclass(frozen=True)
class BarInput:
    """One input row: a symbol's candle ending at ``bar_end_ms`` and its prediction (or None)."""

    symbol: str
    bar_end_ms: int
    open: float
    high: float
    low: float
    close: float
    p_up: float | None = None
    p_down: float | None = None

    @property
    def signal(self) -> float:
        """``p_up - p_down``; NaN when either is None/NaN (a degraded row)."""
        if self.p_up is None or self.p_down is None:
            return math.nan
        return float(self.p_up) - float(self.p_down)


@dataclass
class StepResult:
    """What one group emits: fills (+ rejected re-emissions in ``orders``), new orders, equity.

    ``orders`` holds the rejected-order re-emissions of step 1 (processing order) followed by
    the new orders (kill-switch orders, then step-5 decisions); ``equity`` is the step-6 row.
    """

    orders: list[dict[str, Any]]
    fills: list[dict[str, Any]]
    equity: dict[str, Any]


def client_order_id(strategy_id: str, symbol: str, bar_end_ms: int, side: str) -> str:
    """``f"{strategy_id}-{symbol}-{bar_end_ms}-{side}"`` (deterministic, unique per bar)."""
    return f"{strategy_id}-{symbol}-{bar_end_ms}-{side}"


class StrategyEngine:
    """The strategy of strategy_rules.md, one ``step`` per group of bars sharing ``bar_end_ms``.

    ``state()`` is a JSON-serializable snapshot; ``StrategyEngine(config, engine.state())``
    continues bit-identically.
    """

    def __init__(self, config: StrategyConfig, state: dict[str, Any] | None = None) -> None:
        self.config = config
        self.broker = PaperBroker(
            config.initial_cash, config.fee_bps, config.slippage_bps, config.qty_step
        )
        self._last_bar_end_ms: int | None = None
        self._day: int | None = None
        self._day_start_equity = float(config.initial_cash)
        self._prev_equity = float(config.initial_cash)  # equity at the end of the last group
        self._killed = False
        self._bars_seen: dict[str, int] = {}  # = bar_i of the symbol's next bar
        self._entry_bar: dict[str, int] = {}
        self._last_exit_bar: dict[str, int] = {}
        if state is not None:
            self._load(state)

    # -- properties -----------------------------------------------------------------------

    @property
    def killed(self) -> bool:
        """Whether the daily kill-switch is active."""
        return self._killed

    @property
    def last_bar_end_ms(self) -> int | None:
        """``bar_end_ms`` of the last processed group (None before the first)."""
        return self._last_bar_end_ms

    # -- the step -------------------------------------------------------------------------

    def step(self, bar_end_ms: int, rows: Sequence[BarInput]) -> StepResult:
        """Process one group T (strategy_rules.md steps 1-6); rows in any order.

        Raises ValueError (state untouched) if ``bar_end_ms`` is not greater than the previous
        group's, a row has another ``bar_end_ms``, a symbol repeats, the group is empty or a
        row's open/close is not a positive finite number.
        """
        t = int(bar_end_ms)
        self._validate(t, rows)
        cfg = self.config
        broker = self.broker
        ordered = sorted(rows, key=lambda r: r.symbol)
        by_symbol = {r.symbol: r for r in ordered}
        bar_i = {r.symbol: self._bars_seen.get(r.symbol, 0) for r in ordered}
        orders: list[dict[str, Any]] = []
        fills: list[dict[str, Any]] = []

        # 1. fills at this bar's open
        for r in ordered:
            if r.symbol not in broker.pending:
                continue
            fill, rejected = broker.fill_pending(r.symbol, t, float(r.open))
            if fill is not None:
                fills.append(fill)
                if fill["side"] == BUY:
                    self._entry_bar[r.symbol] = bar_i[r.symbol]
                else:
                    self._last_exit_bar[r.symbol] = bar_i[r.symbol]
            if rejected is not None:
                orders.append(rejected)

        # 2. marks
        for r in ordered:
            broker.mark(r.symbol, float(r.close))
        gross = broker.gross()
        equity = broker.cash + gross

        # 3. day
        day = (t - 1) // DAY_MS
        if self._day is None or day != self._day:
            self._day = day
            self._day_start_equity = self._prev_equity
            self._killed = False

        # 4. kill-switch
        if not self._killed and equity <= self._day_start_equity * (1 - cfg.max_daily_loss_pct):
            self._killed = True
            for s in broker.symbols:
                if broker.position[s] > 0 and s not in broker.pending:
                    row = by_symbol.get(s)
                    signal = row.signal if row is not None else math.nan
                    orders.append(
                        self._order(s, t, SELL, "kill_switch", broker.last_close[s], signal)
                    )

        # 5. decisions
        for r in ordered:
            s = r.symbol
            if s in broker.pending:
                continue
            close = float(r.close)
            signal = r.signal
            i = bar_i[s]
            if broker.position[s] > 0:
                reason = None
                if close <= broker.avg_entry[s] * (1 - cfg.stop_loss_pct):
                    reason = "stop_loss"
                elif i - self._entry_bar[s] + 1 >= cfg.max_hold_bars and not (
                    signal >= cfg.entry_threshold
                ):
                    reason = "max_hold"
                elif signal <= cfg.exit_threshold:  # False for NaN
                    reason = "signal_exit"
                if reason is not None:
                    orders.append(self._order(s, t, SELL, reason, close, signal))
            elif not self._killed and signal >= cfg.entry_threshold:  # False for NaN
                last_exit = self._last_exit_bar.get(s)
                if last_exit is not None and i - last_exit < cfg.cooldown_bars:
                    continue
                room = cfg.max_gross_notional - (broker.gross() + broker.pending_buy_notional())
                if room <= 0:
                    continue
                target = min(cfg.position_fraction * equity, cfg.max_position_notional, room)
                qty = floor_step(target / close, cfg.qty_step)
                if qty * close >= cfg.min_notional:
                    orders.append(self._order(s, t, BUY, "signal_entry", close, signal, qty))

        for r in ordered:
            self._bars_seen[r.symbol] = bar_i[r.symbol] + 1
        self._prev_equity = equity
        self._last_bar_end_ms = t

        # 6. snapshot
        snapshot = {
            "bar_end_ms": t,
            "cash": broker.cash,
            "equity": equity,
            "gross": gross,
            "realized_pnl": broker.realized_pnl,
            "fees_paid": broker.fees_paid,
            "killed": self._killed,
            "degraded": sum(1 for r in ordered if math.isnan(r.signal)),
        }
        return StepResult(orders=orders, fills=fills, equity=snapshot)

    def _order(
        self,
        symbol: str,
        t: int,
        side: str,
        reason: str,
        decision_price: float,
        signal: float,
        qty: float | None = None,
    ) -> dict[str, Any]:
        """A new order (sells: the whole position at decision time), submitted to the broker."""
        order = {
            "client_order_id": client_order_id(self.config.strategy_id, symbol, t, side),
            "symbol": symbol,
            "bar_end_ms": t,
            "side": side,
            "qty": self.broker.position[symbol] if qty is None else qty,
            "decision_price": decision_price,
            "reason": reason,
            "signal": signal,
            "status": "new",
        }
        self.broker.submit(order)
        return order

    def _validate(self, t: int, rows: Sequence[BarInput]) -> None:
        if self._last_bar_end_ms is not None and t <= self._last_bar_end_ms:
            raise ValueError(f"bar_end_ms {t} is not after the previous {self._last_bar_end_ms}")
        if not rows:
            raise ValueError(f"empty group at bar_end_ms {t}")
        seen: set[str] = set()
        for r in rows:
            if int(r.bar_end_ms) != t:
                raise ValueError(f"row {r.symbol} has bar_end_ms {r.bar_end_ms}, group is {t}")
            if r.symbol in seen:
                raise ValueError(f"symbol {r.symbol} twice in group {t}")
            seen.add(r.symbol)
            for name in ("open", "close"):
                v = float(getattr(r, name))
                if not (math.isfinite(v) and v > 0):
                    raise ValueError(f"row {r.symbol}@{t}: {name}={v} is not a positive number")

    # -- state ----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        """JSON-serializable snapshot (strict JSON: no NaN); floats round-trip exactly."""
        return {
            "version": STATE_VERSION,
            "last_bar_end_ms": self._last_bar_end_ms,
            "day": self._day,
            "day_start_equity": self._day_start_equity,
            "prev_equity": self._prev_equity,
            "killed": self._killed,
            "bars_seen": dict(self._bars_seen),
            "entry_bar": dict(self._entry_bar),
            "last_exit_bar": dict(self._last_exit_bar),
            "broker": self.broker.state(),
        }

    def _load(self, state: dict[str, Any]) -> None:
        st = copy.deepcopy(state)
        if st.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported strategy state version {st.get('version')!r}")
        last = st["last_bar_end_ms"]
        self._last_bar_end_ms = None if last is None else int(last)
        self._day = None if st["day"] is None else int(st["day"])
        self._day_start_equity = float(st["day_start_equity"])
        self._prev_equity = float(st["prev_equity"])
        self._killed = bool(st["killed"])
        self._bars_seen = {str(k): int(v) for k, v in st["bars_seen"].items()}
        self._entry_bar = {str(k): int(v) for k, v in st["entry_bar"].items()}
        self._last_exit_bar = {str(k): int(v) for k, v in st["last_exit_bar"].items()}
        cfg = self.config
        self.broker = PaperBroker(
            cfg.initial_cash, cfg.fee_bps, cfg.slippage_bps, cfg.qty_step, state=st["broker"]
        )


def _frame(rows: list[dict[str, Any]], columns: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(columns)).astype(columns)


def run_batch(
    bars: pd.DataFrame, config: StrategyConfig
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Run a fresh :class:`StrategyEngine` over ``bars``; returns ``(orders, fills, equity)``.

    ``bars`` has columns symbol, bar_end_ms, open, high, low, close, p_up, p_down (NaN = no
    prediction); groups by ``bar_end_ms`` ascending and calls ``step`` once per group.
    """
    missing = [c for c in BAR_COLUMNS if c not in bars.columns]
    if missing:
        raise ValueError(f"bars lacks columns {missing}")
    df = bars.sort_values("bar_end_ms", kind="stable")
    ts = df["bar_end_ms"].to_numpy(dtype=np.int64)
    sym = df["symbol"].astype(str).tolist()
    cols = {c: df[c].to_numpy(dtype=np.float64) for c in ("open", "high", "low", "close")}
    preds = {c: df[c].to_numpy(dtype=np.float64) for c in ("p_up", "p_down")}
    engine = StrategyEngine(config)
    orders: list[dict[str, Any]] = []
    fills: list[dict[str, Any]] = []
    equity: list[dict[str, Any]] = []
    if len(ts):
        starts = np.flatnonzero(np.r_[True, ts[1:] != ts[:-1]])
        ends = np.r_[starts[1:], len(ts)]
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            t = int(ts[a])
            group = [
                BarInput(
                    symbol=sym[k],
                    bar_end_ms=t,
                    open=float(cols["open"][k]),
                    high=float(cols["high"][k]),
                    low=float(cols["low"][k]),
                    close=float(cols["close"][k]),
                    p_up=None if math.isnan(preds["p_up"][k]) else float(preds["p_up"][k]),
                    p_down=None if math.isnan(preds["p_down"][k]) else float(preds["p_down"][k]),
                )
                for k in range(a, b)
            ]
            res = engine.step(t, group)
            orders.extend(res.orders)
            fills.extend(res.fills)
            equity.append(res.equity)
    return (
        _frame(orders, ORDER_COLUMNS),
        _frame(fills, FILL_COLUMNS),
        _frame(equity, EQUITY_COLUMNS),
    )
