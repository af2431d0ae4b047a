"""One typed model per topic: the fields of each message the pipeline writes, in order.

Each topic (``candles``, ``features``, ``predictions``, ``orders``, ``fills``, ``equity``;
``trades`` has its own contract in :mod:`udfs.trade_contract`) is an ordered mapping of
field name -> :class:`Field`, whose ``kind`` says what the value is. Everything that holds
these messages derives from here rather than typing the columns again:

- the writers' validation (:mod:`jobs.writers`: a kind -> a checked column type, in one
  table there) and so the ClickHouse rows they insert;
- the strategy job's output rows and Flink sink columns (:mod:`udfs.strategy`,
  :mod:`udfs.flink_strategy`: pandas dtypes from :func:`pandas_dtypes`);
- the prediction UDF's result columns (:mod:`udfs.predict_client`);
- the ClickHouse tables (sql/clickhouse) are checked against it column by column
  (tests/unit/udfs/test_topics.py), and new feature columns arrive as generated ``ALTER``
  migrations from :data:`FEATURES` (infra/clickhouse).

Dependency-free but for :mod:`udfs.indicators`' feature names, so it sits at the bottom.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from udfs.contract import PRICE_COLUMNS
from udfs.indicators import FEATURE_NAMES

Kind = Literal[
    "ident",  # a non-empty identifier (a symbol, an id, a key)
    "model_tag",  # an identifier, or null (a degraded/refused prediction; stored as '')
    "text_or_null",  # free text or null
    "choice",  # one of Field.choices
    "epoch_ms",  # epoch milliseconds inside ClickHouse's DateTime span
    "bar_end_ms",  # an exclusive bar end: epoch ms, up to the span's end + 1
    "iso_ms",  # Flink's ISO-8601 text of a timestamp, stored as epoch ms
    "iso_or_epoch_ms",  # ISO-8601 text or epoch ms, stored as epoch ms
    "count",  # an integer >= 0
    "int64",  # any 64-bit integer
    "uint32",  # an integer 0 .. 2**32 - 1
    "float",  # a finite number
    "float_or_null",  # a finite number or null (a feature still warming up)
    "num_or_null",  # a finite number, NaN or null (a probability of a failed prediction)
    "flag",  # a boolean (0/1)
]

# pandas dtype of each kind in the strategy job's frames (udfs/strategy.py)
PANDAS_DTYPE: dict[Kind, str] = {
    "ident": "object",
    "model_tag": "object",
    "text_or_null": "object",
    "choice": "object",
    "epoch_ms": "int64",
    "bar_end_ms": "int64",
    "iso_ms": "int64",
    "iso_or_epoch_ms": "int64",
    "count": "int64",
    "int64": "int64",
    "uint32": "int64",
    "float": "float64",
    "float_or_null": "float64",
    "num_or_null": "float64",
    "flag": "bool",
}


@dataclass(frozen=True)
class Field:
    kind: Kind
    choices: tuple[str, ...] = ()


IDENT = Field("ident")
FLOAT = Field("float")
BAR_END = Field("bar_end_ms")

# ------------------------------------------------------------------------- vocabularies
PREDICTION_STATUSES = ("ok", "degraded", "refused")
SIDES = ("buy", "sell")
# udfs/strategy_rules.md: the five decision reasons, and the paper broker's rejection reason
ORDER_REASONS = (
    "signal_entry",
    "signal_exit",
    "max_hold",
    "stop_loss",
    "kill_switch",
    "insufficient_cash",
)
ORDER_STATUSES = ("new", "rejected")

# ------------------------------------------------------------------------------ topics
# the candles job's output (sql/flink/candles.sql); ClickHouse `candles` (migration 001)
CANDLES: dict[str, Field] = {
    "symbol": IDENT,
    "timeframe": IDENT,
    "window_start_ms": Field("epoch_ms"),  # -> the DateTime partition column window_start
    "window_end_ms": BAR_END,  # exclusive: the last bar ends at 2**32 * 1000
    **dict.fromkeys(("open", "high", "low", "close", "volume", "quote_volume", "vwap"), FLOAT),
    "trade_count": Field("count"),
    "buy_volume": FLOAT,
    "sell_volume": FLOAT,
    "first_trade_id": Field("int64"),
    "last_trade_id": Field("int64"),
    "emitted_at": Field("iso_or_epoch_ms"),  # Flink's ISO text or epoch ms
}

# the features job's output (sql/flink/features.sql); ClickHouse `features` (migration 002
# + generated ALTERs), the offline parquet files and the Feast views (infra/feature_store)
FEATURES: dict[str, Field] = {
    "feature_key": IDENT,
    "symbol": IDENT,
    "timeframe": IDENT,
    "window_start_ms": Field("epoch_ms"),
    "window_end_ms": BAR_END,
    **dict.fromkeys(PRICE_COLUMNS, FLOAT),
    "trade_count": Field("count"),
    **dict.fromkeys(FEATURE_NAMES, Field("float_or_null")),
    "features_ready": Field("flag"),
    "event_time": Field("iso_ms"),  # Feast's event timestamp
    "computed_at": Field("iso_ms"),  # Feast's created timestamp; the ClickHouse version
}

# the strategy job's four outputs (sql/flink/strategy.sql); ClickHouse trading_* (005)
PREDICTIONS: dict[str, Field] = {
    "symbol": IDENT,
    "timeframe": IDENT,
    "bar_end_ms": BAR_END,
    "model_tag": Field("model_tag"),
    "p_down": Field("num_or_null"),
    "p_flat": Field("num_or_null"),
    "p_up": Field("num_or_null"),
    "signal": Field("num_or_null"),
    "status": Field("choice", PREDICTION_STATUSES),
    "reason": Field("text_or_null"),
    "latency_ms": Field("num_or_null"),
    "predicted_at_ms": Field("epoch_ms"),  # 0: unknown
}
# the key columns the strategy job adds to each row of the paper broker's frames
STRATEGY_KEYS = ("strategy", "timeframe")
ORDERS: dict[str, Field] = {
    "strategy": IDENT,
    "timeframe": IDENT,
    "client_order_id": IDENT,
    "symbol": IDENT,
    "bar_end_ms": BAR_END,
    "side": Field("choice", SIDES),
    "qty": FLOAT,
    "decision_price": FLOAT,
    "reason": Field("choice", ORDER_REASONS),
    "signal": Field("num_or_null"),
    "status": Field("choice", ORDER_STATUSES),
}
FILLS: dict[str, Field] = {
    "strategy": IDENT,
    "timeframe": IDENT,
    "client_order_id": IDENT,
    "symbol": IDENT,
    "bar_end_ms": BAR_END,
    "side": Field("choice", SIDES),
    **dict.fromkeys(
        ("qty", "price", "fee", "position_after", "avg_entry_after", "realized_pnl"), FLOAT
    ),
    "cash_after": FLOAT,
}
EQUITY: dict[str, Field] = {
    "strategy": IDENT,
    "timeframe": IDENT,
    "bar_end_ms": BAR_END,
    **dict.fromkeys(("cash", "equity", "gross", "realized_pnl", "fees_paid"), FLOAT),
    "killed": Field("flag"),
    "degraded": Field("uint32"),  # bars so far without a usable prediction
}

TOPICS: dict[str, dict[str, Field]] = {
    "candles": CANDLES,
    "features": FEATURES,
    "predictions": PREDICTIONS,
    "orders": ORDERS,
    "fills": FILLS,
    "equity": EQUITY,
}


def pandas_dtypes(topic: str, *, without: tuple[str, ...] = ()) -> dict[str, str]:
    """name -> pandas dtype of ``topic``'s fields in order, leaving out ``without``."""
    return {n: PANDAS_DTYPE[f.kind] for n, f in TOPICS[topic].items() if n not in without}
