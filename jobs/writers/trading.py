"""Trading writer: the strategy job's topics -> ClickHouse (``candleflow trading write``).

The strategy job (sql/flink/strategy.sql, udfs/strategy_rules.md) writes four topics; this
writer puts them into four tables of migration 005 (sql/clickhouse/005_strategy.sql):

- ``predictions`` -> ``trading_predictions``: one row per (symbol, timeframe, bar_end_ms,
  model_tag); version ``predicted_at_ms`` (a re-scored bar wins);
- ``orders`` -> ``trading_orders``: one row per (strategy, client_order_id); version
  ``bar_end_ms * 2 + (status = 'rejected')``, a MATERIALIZED column;
- ``fills`` -> ``trading_fills``: one row per (strategy, client_order_id), i.e. the fill id
  is the order's client_order_id (one fill per order); version ``bar_end_ms``;
- ``equity`` -> ``trading_equity``: one row per (strategy, bar_end_ms).

Each table's columns are its topic's fields (:data:`FIELDS`, same order), so a ``FINAL``
read equals the messages; the one exception: a null ``model_tag`` (a degraded or refused
prediction) is stored as ``''`` (a sorting key cannot be Nullable). Versions come from the
messages, never from the clock: re-delivering a message writes an identical row. A
rejected order (re-emitted with the same ``bar_end_ms``) outranks its ``new`` row in any
arrival order. ``pnl_daily`` is filled from ``trading_equity`` by a materialized view.

The loop is :class:`jobs.writers.base.KafkaBatchWriter`'s (the feature writer's): one
consumer group (``trading_group_id``) reads the four topics in micro-batches; a malformed
message (any field its column cannot hold: :data:`FIELDS`) goes to ``<topic>_dlq`` with a
reason (:func:`parse_trading_message`), as does a row ClickHouse still rejects (isolated by
bisecting the batch); each table's rows of the batch are inserted (retried with backoff
while ClickHouse is unreachable);
the offsets are committed only after every insert succeeded. Each batch also adds
``pipeline_freshness`` rows (stages ``prediction`` and ``order``; infra/freshness.py).
At-least-once + idempotent rows = nothing lost, nothing duplicated under ``FINAL``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from functools import partial
from typing import Any, Literal

from infra.clickhouse import TRADING_TABLES
from infra.freshness import TABLE as FRESHNESS_TABLE
from infra.freshness import freshness_rows, now_ms, observe, start_metrics_server
from infra.settings import Settings
from jobs.writers.base import KafkaBatchWriter
from jobs.writers.columns import topic_columns
from jobs.writers.config import Batch, WriterConfig, WriterStats
from jobs.writers.validation import Column, InvalidMessage, check_fields, json_object

log = logging.getLogger(__name__)

DETECTED_BY = "trading_writer"
Kind = Literal["predictions", "orders", "fills", "equity"]
KINDS: tuple[Kind, ...] = ("predictions", "orders", "fills", "equity")

_PROBS = ("p_down", "p_flat", "p_up", "signal")

# each topic's fields and what their columns hold: the topic models of udfs/topics.py
# (identifiers are non-empty strings; bar_end_ms feeds the DateTime partition (of
# bar_end_ms - 1) and the orders version (x 2 + 1), both inside Int64; predicted_at_ms is
# epoch ms or 0 (unknown); a nullable number may be NaN (stored as NaN; not for an `ok`
# prediction), never infinite)
FIELDS: dict[str, tuple[tuple[str, Column], ...]] = {
    kind: tuple(topic_columns(kind).items())
    for kind in ("predictions", "orders", "fills", "equity")
}
_COLUMNS: dict[str, dict[str, Column]] = {k: dict(v) for k, v in FIELDS.items()}


# ------------------------------------------------------------------------- validation
class InvalidTradingMessage(InvalidMessage):
    """A strategy-topic message that cannot become a row (the reason goes to the DLQ)."""


def trading_row(kind: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """A decoded message of topic ``kind`` -> its table row (the :data:`FIELDS` of ``kind``,
    in order, each as its column holds it; extra fields such as the Kafka key field are
    dropped)."""
    row = check_fields(obj, _COLUMNS[kind], error=InvalidTradingMessage)
    if kind == "predictions":
        if row["status"] == "ok":
            bad = [f for f in _PROBS if row[f] is None or not math.isfinite(row[f])]
            if bad:
                raise InvalidTradingMessage(
                    f"status ok needs numbers in {', '.join(bad)} (got null or NaN)"
                )
        else:
            bad = [f for f in _PROBS if row[f] is not None]
            if bad:
                raise InvalidTradingMessage(
                    f"status {row['status']} must have null {', '.join(bad)}"
                )
    return row


def parse_trading_message(kind: str, raw: bytes | None) -> dict[str, Any]:
    """A message of topic ``kind`` (predictions | orders | fills | equity) -> its table row,
    or :class:`InvalidTradingMessage` with a reason (the dead-letter record's ``reason``)."""
    if kind not in FIELDS:
        raise ValueError(f"unknown trading topic kind {kind!r}")
    return trading_row(kind, json_object(raw, error=InvalidTradingMessage))


def dlq_topic(topic: str) -> str:
    return f"{topic}_dlq"


def topic_kinds(settings: Settings) -> dict[str, Kind]:
    """Topic name -> kind, from the strategy job's topic settings."""
    kinds: dict[str, Kind] = {
        settings.topic_predictions: "predictions",
        settings.topic_orders: "orders",
        settings.topic_fills: "fills",
        settings.topic_equity: "equity",
    }
    if len(kinds) != len(KINDS):
        raise ValueError("the predictions, orders, fills and equity topics must differ")
    return kinds


def trading_config(settings: Settings, **overrides: Any) -> WriterConfig:
    """The feature writer's batch/backoff settings with the trading writer's group."""
    if overrides.get("group_id") is None:
        overrides["group_id"] = settings.trading_group_id
    return WriterConfig.from_settings(settings, **overrides)


# ----------------------------------------------------------------------------- writer
class TradingWriter(KafkaBatchWriter):
    """Kafka predictions/orders/fills/equity -> ClickHouse, commit after the inserts."""

    name = "trading writer"
    detected_by = DETECTED_BY

    def __init__(self, settings: Settings, config: WriterConfig | None = None) -> None:
        self.kinds = topic_kinds(settings)
        super().__init__(settings, config or trading_config(settings), list(self.kinds))
        # id(order row) -> its freshness observation, until the row is written (a batch is
        # written in parts when a store rejects some of its rows)
        self._orders_seen: dict[int, tuple[str, str, int, int]] = {}

    def dlq_topic(self, topic: str) -> str:
        return dlq_topic(topic)

    def parse(self, topic: str, raw: bytes | None) -> dict[str, Any]:
        kind = self.kinds[topic]
        row = parse_trading_message(kind, raw)
        if kind == "orders":  # freshness: when the order reached this writer
            self._orders_seen[id(row)] = (
                row["symbol"],
                row["timeframe"],
                row["bar_end_ms"],
                now_ms(),
            )
        return row

    def _prepare(self) -> str:
        self._retrying("clickhouse migrate", self._migrate)
        store = self._store
        where = f"{store.backend} database {store.database}" if store else "?"
        return f"{', '.join(self.topics)} -> ClickHouse {where} (trading_* tables)"

    def _write(self, batch: Batch) -> None:
        """One INSERT per table of the batch, each retried on its own, in topic order."""
        for topic in self.topics:
            rows = batch.rows.get(topic)
            if not rows:
                continue
            table = TRADING_TABLES[self.kinds[topic]]
            self._retrying(f"ClickHouse {table}", partial(self._insert_clickhouse, table, rows))
        fresh = self.freshness(batch)
        if fresh:
            self._retrying(
                f"ClickHouse {FRESHNESS_TABLE}",
                partial(self._insert_clickhouse, FRESHNESS_TABLE, fresh),
            )
            observe(fresh)

    def freshness(self, batch: Batch) -> list[dict[str, Any]]:
        """``pipeline_freshness`` rows of a batch: stage ``prediction`` (predicted_at_ms vs
        the bar end) and ``order`` (when the writer received the order vs the bar end)."""
        preds = [
            (r["symbol"], r["timeframe"], r["bar_end_ms"], r["predicted_at_ms"])
            for t, k in self.kinds.items()
            if k == "predictions"
            for r in batch.rows.get(t, [])
            if r["predicted_at_ms"] > 0
        ]
        orders = [
            seen
            for t, k in self.kinds.items()
            if k == "orders"
            for r in batch.rows.get(t, [])
            if (seen := self._orders_seen.pop(id(r), None)) is not None
        ]
        if len(self._orders_seen) > 100_000:  # rows dead-lettered by a store: forget them
            self._orders_seen.clear()
        kw: dict[str, Any] = {"settings": self.settings, "observed_by": DETECTED_BY}
        return [
            *freshness_rows("prediction", preds, **kw),
            *freshness_rows("order", orders, **kw),
        ]

    def rows_by_kind(self) -> dict[str, int]:
        return {k: self.stats.rows_by_topic.get(t, 0) for t, k in self.kinds.items()}


def summary(writer: TradingWriter, seconds: float) -> dict[str, Any]:
    """A run's numbers as plain JSON values (for reports)."""
    st: WriterStats = writer.stats
    busy = (st.last_commit_at - st.first_row_at) if st.first_row_at else 0.0
    return {
        "group_id": writer.config.group_id,
        "rows": writer.rows_by_kind(),
        "dead_lettered": st.dead_lettered,
        "dlq_reasons": dict(st.dlq_reasons),
        "batches": st.batches,
        "retries": dict(st.retries),
        "seconds": round(seconds, 2),
        "rows_per_s": round(st.rows / busy, 1) if busy > 0 else None,
    }


def run_trading_writer(settings: Settings, config: WriterConfig) -> TradingWriter:
    """``candleflow trading write``: start, install SIGTERM/SIGINT handlers, run, close."""
    writer = TradingWriter(settings, config)
    writer.install_signal_handlers()
    start_metrics_server(settings)
    try:
        writer.start()
        writer.run()
    finally:
        writer.close()
    return writer


def write_until_idle(settings: Settings, idle_s: float = 3.0, **overrides: Any) -> dict[str, Any]:
    """Write everything the topics hold now (stop after ``idle_s`` without messages);
    returns :func:`summary` (backtests)."""
    t0 = time.monotonic()
    writer = TradingWriter(settings, trading_config(settings, until_idle_s=idle_s, **overrides))
    with writer:
        writer.run()
    return summary(writer, time.monotonic() - t0)
