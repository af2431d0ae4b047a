"""The Kafka side of ingestion: :class:`TradeSink` validates each trade and sends a valid one
to the ``trades`` topic (keyed by symbol) and a bad one to the DLQ with its reason, tracking
delivery acknowledgements and counting what it did in :class:`IngestStats`;
:class:`BrokerError` is a send the producer could not take or deliver. Used by both
``ingest replay`` (:mod:`jobs.ingest.replay`) and ``ingest live`` (:mod:`jobs.ingest.live`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from infra.settings import Settings
from jobs.ingest.schema import InvalidTrade, Trade, dlq_record, validate

log = logging.getLogger(__name__)


@dataclass
class IngestStats:
    read: int = 0
    sent: int = 0
    dead_lettered: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str) -> None:
        self.dead_lettered += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


class BrokerError(RuntimeError):
    """The producer could not take or deliver a record."""


def _payload_text(raw: Any) -> str:
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "replace")
    if isinstance(raw, str):
        return raw
    return json.dumps(raw, default=str)


class TradeSink:
    """Validates and sends trades: valid -> ``trades`` (key symbol), invalid -> DLQ.

    ``send(raw)`` is the one-call path (live ingestion); ``check`` / ``publish`` /
    ``dead_letter`` are its steps, used by :func:`replay` to dead-letter with a file origin.
    """

    def __init__(
        self,
        producer: Any,
        topic: str,
        dlq_topic: str,
        detected_by: str = "ingest",
        max_future_ms: int | None = None,
    ):
        from infra.kafka import OffsetTracker

        self.producer = producer
        self.topic = topic
        self.dlq_topic = dlq_topic
        self.detected_by = detected_by
        self.max_future_ms = max_future_ms
        self.stats = IngestStats()
        self.tracker = OffsetTracker(topic)
        self.dlq_tracker = OffsetTracker(dlq_topic)

    @classmethod
    def for_settings(
        cls, settings: Settings, detected_by: str = "ingest", **producer_kw: Any
    ) -> TradeSink:
        """A sink on the configured broker, creating the trades/DLQ topics if needed;
        ``producer_kw`` override kafka-python producer settings (e.g. timeouts)."""
        from infra.kafka import ensure_topics, make_producer

        topics = [settings.topic_trades, settings.topic_trades_dlq]
        ensure_topics(settings.kafka_bootstrap, topics, partitions=settings.topic_partitions)
        producer = make_producer(settings.kafka_bootstrap, **producer_kw)
        return cls(
            producer,
            settings.topic_trades,
            settings.topic_trades_dlq,
            detected_by,
            max_future_ms=settings.trade_max_future_ms,
        )

    def check(self, raw: str | bytes | dict[str, Any]) -> Trade:
        """:func:`validate` with this sink's future limit. A validator that fails with
        anything but :class:`InvalidTrade` rejects the record instead of crashing the caller."""
        try:
            if self.max_future_ms is None:
                return validate(raw)
            return validate(raw, max_future_ms=self.max_future_ms)
        except InvalidTrade:
            raise
        except Exception as e:
            reason = f"validator error ({type(e).__name__})"
            first = reason not in self.stats.reasons
            log.log(
                logging.WARNING if first else logging.DEBUG, "%s on %.300r: %.300r", reason, raw, e
            )
            raise InvalidTrade(reason, _payload_text(raw)) from e

    def _produce(self, tracker: Any, value: Any, key: str | None = None) -> None:
        from infra.kafka import send_tracked

        try:
            send_tracked(self.producer, tracker, value, key=key)
        except Exception as e:
            raise BrokerError(f"send to {tracker.topic} failed: {e!r}") from e

    def publish(self, trade: Trade) -> None:
        self._produce(self.tracker, trade.to_json(), key=trade.symbol)
        self.stats.sent += 1

    def dead_letter(
        self, reason: str, payload: str, *, source: str | None = None, offset: int | None = None
    ) -> None:
        """A DLQ record (``schema.dlq_record``); ``source``/``offset`` say where it came from."""
        rec = dlq_record(reason, payload, source or self.topic, self.detected_by)
        if offset is not None:
            rec["source_offset"] = offset
        self._produce(self.dlq_tracker, rec)
        self.stats.reject(reason)

    def send(self, raw: str | bytes | dict[str, Any]) -> Trade | None:
        self.stats.read += 1
        try:
            trade = self.check(raw)
        except InvalidTrade as e:
            self.dead_letter(e.reason, e.payload)
            return None
        self.publish(trade)
        return trade

    @property
    def failures(self) -> list[str]:
        """Deliveries the broker reported as failed so far."""
        return self.tracker.errors + self.dlq_tracker.errors

    def flush(self, timeout_s: float | None = None) -> None:
        self.producer.flush(timeout=timeout_s)
        errors = self.failures
        if errors:
            raise RuntimeError(f"{len(errors)} sends failed, first: {errors[0]}")
