"""Feature writer: Kafka ``features`` -> offline parquet + Feast online (Redis) + ClickHouse.

``candleflow features write`` runs it. One consumer in a consumer group reads the topic in
micro-batches (up to ``max_batch`` messages or ``max_wait_ms``) and, per batch:

1. parses and validates every message; a malformed one goes to the dead-letter topic
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
Any other error stops the writer without a commit (a restart replays the batch).

The consume / dead-letter / retry / commit loop is :class:`jobs.kafka_writer.KafkaBatchWriter`
(shared with the trading writer); this module adds the message validation and the three
stores.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

from infra.clickhouse import FEATURES_BASE_COLUMNS, features_row, iso_to_ms
from infra.freshness import TABLE as FRESHNESS_TABLE
from infra.freshness import freshness_rows, now_ms, observe, start_metrics_server
from infra.settings import Settings
from jobs.kafka_writer import (
    PAUSE_ENV,
    Batch,
    InvalidMessage,
    KafkaBatchWriter,
    TransientError,
    WriterConfig,
    WriterStats,
    is_transient,
    json_object,
)
from jobs.kafka_writer import dlq_record as _dlq_record
from udfs.indicators import FEATURE_NAMES

if TYPE_CHECKING:
    import pandas as pd

    from infra.feature_store import FeatureStoreClient

__all__ = [
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

_STR_FIELDS = ("feature_key", "symbol", "timeframe")
_INT_FIELDS = ("window_start_ms", "window_end_ms", "trade_count")
_NUM_FIELDS = ("open", "high", "low", "close", "volume", "vwap")
_TS_FIELDS = ("event_time", "computed_at")
REQUIRED = (*FEATURES_BASE_COLUMNS, *FEATURE_NAMES, "features_ready", *_TS_FIELDS)


# ------------------------------------------------------------------------- validation
class InvalidFeatureRow(InvalidMessage):
    """A `features` message that cannot become a row (the reason goes to the DLQ)."""


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def parse_feature_message(raw: bytes | None) -> dict[str, Any]:
    """A ``features`` message -> its JSON object, or :class:`InvalidFeatureRow` with a reason.

    The fields are those of ``sql/flink/features.sql``'s sink (extra fields are dropped);
    prices and the bar must be present, features may be null (warm-up), timestamps are
    Flink's ISO-8601 text. Whatever passes here fits the ClickHouse table and Feast.
    """
    obj = json_object(
        raw, REQUIRED, strings=_STR_FIELDS, integers=_INT_FIELDS, error=InvalidFeatureRow
    )
    for f in _NUM_FIELDS:
        if not _is_num(obj[f]) or not math.isfinite(obj[f]):
            raise InvalidFeatureRow(f"{f}: expected a finite number")
    for f in FEATURE_NAMES:
        if obj[f] is not None and not _is_num(obj[f]):
            raise InvalidFeatureRow(f"{f}: expected a number or null")
    if not isinstance(obj["features_ready"], bool):
        raise InvalidFeatureRow("features_ready: expected true/false")
    if obj["window_end_ms"] <= obj["window_start_ms"]:
        raise InvalidFeatureRow("window_end_ms <= window_start_ms")
    for f in _TS_FIELDS:
        try:
            if not isinstance(obj[f], str):
                raise ValueError("not a string")
            iso_to_ms(obj[f])
        except ValueError as e:
            raise InvalidFeatureRow(f"{f}: not an ISO-8601 timestamp ({e})") from None
    return {f: obj[f] for f in REQUIRED}


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
        t0 = time.monotonic()
        frame = to_feature_frame(rows)
        self._add_time("frame", t0)
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
