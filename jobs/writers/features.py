"""Feature writer: Kafka ``features`` -> offline parquet + Feast online (Redis) + ClickHouse.

``candleflow features write`` runs it. One consumer in a consumer group reads the topic in
micro-batches (up to ``max_batch`` messages or ``max_wait_ms``) and, per batch:

1. parses and validates every message (each field against what its columns hold:
   :data:`COLUMNS`); one that cannot be stored goes to the dead-letter topic
   (``topic_features_dlq``) with a reason and its source partition/offset;
2. writes the batch to the three stores, in this order: DLQ records (flushed), the offline
   store (one parquet part file, ``FeatureStoreClient.write_offline``), the online store
   (``push_online``: the newest row per symbol/timeframe of the batch), ClickHouse (table
   ``features``, rows from ``infra.clickhouse.features_row``) and, for observability, one
   ``pipeline_freshness`` row per feature row (stage ``feature_redis``: observed when the
   Redis push succeeded; infra/freshness.py);
3. commits the batch's end offsets, synchronously, only after all of that succeeded.

Delivery is at-least-once: a crash anywhere before the commit re-delivers the batch to the
next writer of the group, and every write is idempotent, so a replay changes nothing that
a reader can see: ClickHouse's ``ReplacingMergeTree(computed_at)`` collapses the duplicate
under ``FINAL`` (same key, same version), Redis ignores a push whose event time is not newer
than the stored one, and the offline store's readers (``OfflineFiles.read``, Feast's
point-in-time join) keep one row per (symbol, timeframe, event_time): the latest
``computed_at``, here the identical row.

A write that fails with a transient error (Redis, ClickHouse or the broker unreachable)
is retried with exponential backoff (capped at ``writer_max_backoff_s``), forever by
default, step by step: a step that succeeded is not redone, the batch is not committed
and no later message is read until it is written. Failures and the recovery are logged.
A store that rejects rows (a data error) gets the batch bisected: the rows it rejects on
their own are dead-lettered with its error, the rest is written (a dead-lettered row may
already be in the stores written before the one that rejected it).
Any other error stops the writer without a commit (a restart replays the batch).

The consume / dead-letter / retry / commit loop is :class:`jobs.writers.base.KafkaBatchWriter`
(shared with the candles and trading writers); this module adds the message validation and the three
stores.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from infra.clickhouse import features_row
from infra.freshness import TABLE as FRESHNESS_TABLE
from infra.freshness import freshness_rows, now_ms, observe, start_metrics_server
from infra.settings import Settings
from jobs.writers.base import PAUSE_ENV, KafkaBatchWriter
from jobs.writers.columns import topic_columns
from jobs.writers.config import Batch, WriterConfig, WriterStats
from jobs.writers.dlq import dlq_record as _dlq_record
from jobs.writers.errors import TransientError, is_transient
from jobs.writers.validation import Column, InvalidMessage, check_fields, json_object

if TYPE_CHECKING:
    import pandas as pd

    from infra.feature_store import FeatureStoreClient

__all__ = [
    "COLUMNS",
    "PAUSE_ENV",
    "FeatureWriter",
    "InvalidFeatureRow",
    "TransientError",
    "WriterConfig",
    "WriterStats",
    "dlq_record",
    "is_transient",
    "parse_feature_message",
    "run_writer",
]

log = logging.getLogger(__name__)

DETECTED_BY = "feature_writer"
TABLE = "features"

# every field of sql/flink/features.sql's sink with what its columns hold (ClickHouse
# `features`, migration 002; the offline parquet schema and the Feast views of
# infra/feature_store.py take the same values): the `features` model of udfs/topics.py
COLUMNS: dict[str, Column] = topic_columns("features")
REQUIRED = tuple(COLUMNS)


# ------------------------------------------------------------------------- validation
class InvalidFeatureRow(InvalidMessage):
    """A `features` message that cannot become a row (the reason goes to the DLQ)."""


def parse_feature_message(raw: bytes | None) -> dict[str, Any]:
    """A ``features`` message -> its row (the :data:`COLUMNS` fields in order, extras
    dropped, numbers as float, timestamps as given), or :class:`InvalidFeatureRow` with a
    reason. Whatever passes here fits the ClickHouse table, the parquet files and Feast."""
    row = check_fields(json_object(raw, error=InvalidFeatureRow), COLUMNS, error=InvalidFeatureRow)
    if row["window_end_ms"] <= row["window_start_ms"]:
        raise InvalidFeatureRow("window_end_ms <= window_start_ms")
    return row


def dlq_record(reason: str, raw: bytes | None, topic: str, partition: int, offset: int) -> bytes:
    """Same shape as ``trades_dlq`` records (jobs/ingest/schema.py), with the source offset."""
    return _dlq_record(reason, raw, topic, partition, offset, DETECTED_BY)


# ----------------------------------------------------------------------------- writer
class FeatureWriter(KafkaBatchWriter):
    """Kafka ``features`` -> offline + online + ClickHouse, commit after all three."""

    name = "feature writer"
    detected_by = DETECTED_BY

    def __init__(
        self,
        settings: Settings,
        config: WriterConfig | None = None,
        *,
        client: FeatureStoreClient | None = None,
    ) -> None:
        super().__init__(
            settings, config or WriterConfig.from_settings(settings), [settings.topic_features]
        )
        self.topic = settings.topic_features
        self._client = client

    def dlq_topic(self, topic: str) -> str:
        return self.settings.topic_features_dlq

    def parse(self, topic: str, raw: bytes | None) -> dict[str, Any]:
        return parse_feature_message(raw)

    def _prepare(self) -> str:
        """ClickHouse migrations, Feast import + apply (both idempotent)."""
        s = self.settings
        t0 = time.monotonic()
        self._retrying("clickhouse migrate", self._migrate)
        t1 = time.monotonic()
        if self._client is None:
            from infra.feature_store import FeatureStoreClient  # Feast: ~9 s, once

            self._client = FeatureStoreClient(s)
        self._client.apply()
        t2 = time.monotonic()
        return (
            f"ClickHouse {self._store.backend if self._store else '?'} {t1 - t0:.1f} s, "
            f"Feast {t2 - t1:.1f} s: {self.topic} -> offline {s.feast_offline_dir} + Redis "
            f"{s.redis_host}:{s.redis_port} + ClickHouse"
        )

    def _write(self, batch: Batch) -> None:
        """Offline store, then Redis, then ClickHouse; each retried on its own."""
        from infra.feature_store import to_feature_frame

        rows = batch.rows.get(self.topic, [])
        if not rows:
            return
        frame = self._retrying("frame", lambda: to_feature_frame(rows))
        self._retrying("offline store", lambda: self._write_offline(frame))
        self._retrying("online store (Redis)", lambda: self._push_online(frame))
        pushed_at = now_ms()  # freshness: the batch's rows are online from now on
        self._retrying(
            "ClickHouse", lambda: self._insert_clickhouse(TABLE, [features_row(r) for r in rows])
        )
        fresh = freshness_rows(
            "feature_redis",
            [(r["symbol"], r["timeframe"], r["window_end_ms"], pushed_at) for r in rows],
            settings=self.settings,
            observed_by=DETECTED_BY,
        )
        self._retrying(
            f"ClickHouse {FRESHNESS_TABLE}",
            lambda: self._insert_clickhouse(FRESHNESS_TABLE, fresh),
        )
        observe(fresh)

    def _write_offline(self, frame: pd.DataFrame) -> None:
        assert self._client is not None
        self._client.write_offline(frame)

    def _push_online(self, frame: pd.DataFrame) -> None:
        """The newest row per entity of the batch: what Redis ends up holding anyway (it
        skips a row whose event time is not newer), at a fraction of the protobuf work."""
        from infra.feature_store import CREATED_TS, ENTITY_KEYS, EVENT_TS

        assert self._client is not None
        latest = frame.sort_values([*ENTITY_KEYS, EVENT_TS, CREATED_TS], kind="stable")
        latest = latest.drop_duplicates(list(ENTITY_KEYS), keep="last")
        self._client.push_online(latest)


def run_writer(settings: Settings, config: WriterConfig) -> WriterStats:
    """``candleflow features write``: start, install SIGTERM/SIGINT handlers, run, close."""
    writer = FeatureWriter(settings, config)
    writer.install_signal_handlers()
    start_metrics_server(settings)
    try:
        writer.start()
        return writer.run()
    finally:
        writer.close()
