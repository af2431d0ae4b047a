"""Candles writer: Kafka ``candles`` -> ClickHouse ``candles`` (``candleflow candles write``).

The candles job's output, one row per (symbol, timeframe, window_start_ms) under ``FINAL``
(``ReplacingMergeTree(emitted_at)``, sql/clickhouse/001_market_data.sql). The loop is
:class:`jobs.writers.base.KafkaBatchWriter`'s (micro-batches from a consumer group, malformed
messages to ``topic_candles_dlq`` with a reason, inserts retried with backoff, offsets
committed after the insert): at-least-once delivery + idempotent rows. "Malformed" means
any field its column cannot hold (:data:`COLUMNS`); a row the table still rejects (a
constraint, a narrowed column) is isolated by bisecting the batch and dead-lettered with
the store's error, so no message can stop the writer. A candle that the
job emits twice (a restart from a checkpoint re-emits the windows fired after it) is the
same row with a later ``emitted_at``, so ``FINAL`` shows it once.

Observability: one ``pipeline_freshness`` row per candle, stage ``candle``, observed at its
``emitted_at`` (when the job fired the window), and the Prometheus lag histogram
(infra/freshness.py; ``/metrics`` on ``CANDLEFLOW_METRICS_PORT``).
"""

from __future__ import annotations

from typing import Any

from infra.clickhouse import candles_row
from infra.freshness import TABLE as FRESHNESS_TABLE
from infra.freshness import freshness_rows, observe, start_metrics_server
from infra.settings import Settings
from jobs.writers.base import KafkaBatchWriter
from jobs.writers.columns import topic_columns
from jobs.writers.config import Batch, WriterConfig, WriterStats
from jobs.writers.validation import Column, InvalidMessage, check_fields, json_object

DETECTED_BY = "candles_writer"
TABLE = "candles"
# the topic's fields in order = the table's non-materialized columns (001_market_data.sql),
# each with what its column holds: the `candles` model of udfs/topics.py
COLUMNS: dict[str, Column] = topic_columns("candles")
FIELDS: tuple[str, ...] = tuple(COLUMNS)


def parse_candle_message(raw: bytes | None) -> dict[str, Any]:
    """A ``candles`` message -> its ``candles`` row, or :class:`InvalidMessage` (every field
    checked against its column: :data:`COLUMNS`)."""
    row = check_fields(json_object(raw), COLUMNS)
    if row["window_end_ms"] <= row["window_start_ms"]:
        raise InvalidMessage("window_end_ms <= window_start_ms")
    return candles_row(row)


class CandlesWriter(KafkaBatchWriter):
    """Kafka ``candles`` -> ClickHouse ``candles``, commit after the insert."""

    name = "candles writer"
    detected_by = DETECTED_BY

    def __init__(self, settings: Settings, config: WriterConfig | None = None) -> None:
        cfg = config or WriterConfig.from_settings(settings, group_id=settings.candles_group_id)
        super().__init__(settings, cfg, [settings.topic_candles])

    def dlq_topic(self, topic: str) -> str:
        return self.settings.topic_candles_dlq

    def parse(self, topic: str, raw: bytes | None) -> dict[str, Any]:
        return parse_candle_message(raw)

    def _prepare(self) -> str:
        self._retrying("clickhouse migrate", self._migrate)
        backend = self._store.backend if self._store else "?"
        return f"{self.settings.topic_candles} -> ClickHouse {backend} `{TABLE}`"

    def _write(self, batch: Batch) -> None:
        rows = batch.rows.get(self.settings.topic_candles, [])
        if not rows:
            return
        self._retrying("ClickHouse", lambda: self._insert_clickhouse(TABLE, rows))
        fresh = freshness_rows(
            "candle",
            [(r["symbol"], r["timeframe"], r["window_end_ms"], r["emitted_at"]) for r in rows],
            settings=self.settings,
            observed_by=DETECTED_BY,
        )
        self._retrying(
            f"ClickHouse {FRESHNESS_TABLE}", lambda: self._insert_clickhouse(FRESHNESS_TABLE, fresh)
        )
        observe(fresh)


def run_candles_writer(settings: Settings, config: WriterConfig) -> WriterStats:
    """``candleflow candles write``: start, SIGTERM/SIGINT handlers, run, close."""
    writer = CandlesWriter(settings, config)
    writer.install_signal_handlers()
    start_metrics_server(settings)
    try:
        writer.start()
        return writer.run()
    finally:
        writer.close()
