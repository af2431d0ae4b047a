"""Small, tested helpers around kafka-python: topics, producing with offset tracking,
and reading a topic to its end.

Tansu's ListOffsets reports the end of a topic as "base offset of the last batch + 1",
so we never trust ``end_offsets()`` for correctness: producers record the offsets the
broker acknowledged, and readers stop on an expected count or after an idle period.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import TopicAlreadyExistsError
from tenacity import retry, stop_after_delay, wait_exponential

log = logging.getLogger(__name__)

CONSUMER_DEFAULTS: dict[str, Any] = {
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 1000,
    "auto_offset_reset": "earliest",
    "enable_auto_commit": False,
}


@retry(stop=stop_after_delay(20), wait=wait_exponential(multiplier=0.2, max=2), reraise=True)
def ensure_topics(bootstrap: str, topics: Iterable[str], partitions: int = 1) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    try:
        existing = set(admin.list_topics())
        new = [
            NewTopic(name=t, num_partitions=partitions, replication_factor=1)
            for t in topics
            if t not in existing
        ]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):  # created concurrently
                admin.create_topics(new)
            log.info("created topics %s", [t.name for t in new])
    finally:
        admin.close()


class BrokerReset(RuntimeError):
    """The broker no longer holds what a consumer had reached: its committed offsets are
    gone, its position is beyond the end of the log, or a topic it reads was recreated (a
    restart of the local in-memory broker does all three). Stopping beats silently starting
    over at offset 0."""


def topic_ids(bootstrap: str, topics: Iterable[str]) -> dict[str, str | None]:
    """Each topic's id (Kafka's topic UUID; a recreated topic gets a new one), ``None`` for a
    topic that does not exist."""
    from confluent_kafka import KafkaException, TopicCollection
    from confluent_kafka.admin import AdminClient

    names = list(dict.fromkeys(topics))
    if not names:
        return {}
    admin = AdminClient({"bootstrap.servers": bootstrap})
    out: dict[str, str | None] = {}
    for name, fut in admin.describe_topics(TopicCollection(names), request_timeout=10).items():
        try:
            out[name] = str(fut.result().topic_id)
        except KafkaException:
            out[name] = None
    return out


def commit_earliest(bootstrap: str, group: str, topics: Iterable[str]) -> dict[str, list[int]]:
    """Commit each existing partition's earliest offset for ``group``; returns the committed
    offsets per topic (a topic that does not exist yet is skipped: Flink starts partitions it
    discovers later at their earliest offset).

    Where a fresh Flink job starts: its Kafka sources read from the group's committed
    offsets with no reset policy (infra/connectors.py: ``kafka_source``), so a restored job
    whose offsets a broker no longer has fails instead of starting over."""
    from confluent_kafka import Consumer
    from confluent_kafka import TopicPartition as CTopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        meta = c.list_topics(timeout=10)
        out: dict[str, list[int]] = {}
        offsets = []
        for topic in topics:
            tm = meta.topics.get(topic)
            if tm is None or tm.error is not None:
                continue
            for p in sorted(tm.partitions):
                low, _ = c.get_watermark_offsets(CTopicPartition(topic, p), timeout=10)
                offsets.append(CTopicPartition(topic, p, max(int(low), 0)))
                out.setdefault(topic, []).append(max(int(low), 0))
        if offsets:
            c.commit(offsets=offsets, asynchronous=False)
        return out
    finally:
        c.close()


def make_producer(bootstrap: str, **kw: Any) -> KafkaProducer:
    opts: dict[str, Any] = {
        "bootstrap_servers": bootstrap,
        "acks": "all",
        "linger_ms": 20,
        "batch_size": 256 * 1024,
        "key_serializer": lambda k: k.encode() if isinstance(k, str) else k,
        "value_serializer": lambda v: v if isinstance(v, bytes) else json.dumps(v).encode(),
        "retries": 10,
    }
    opts.update(kw)
    return KafkaProducer(**opts)


@dataclass
class OffsetTracker:
    """Collects acknowledged offsets; ``end_offsets`` = last acked + 1 per partition."""

    topic: str
    start: dict[int, int] = field(default_factory=dict)
    end: dict[int, int] = field(default_factory=dict)
    acked: int = 0
    errors: list[str] = field(default_factory=list)

    def on_success(self, md: Any) -> None:
        self.acked += 1
        if md.offset < self.start.get(md.partition, md.offset + 1):
            self.start[md.partition] = md.offset
        if md.offset + 1 > self.end.get(md.partition, 0):
            self.end[md.partition] = md.offset + 1

    def on_error(self, exc: BaseException) -> None:
        self.errors.append(repr(exc))


def send_tracked(
    producer: KafkaProducer, tracker: OffsetTracker, value: Any, key: str | None = None
) -> None:
    fut = producer.send(tracker.topic, value=value, key=key)
    fut.add_callback(tracker.on_success)
    fut.add_errback(tracker.on_error)


def consume(
    bootstrap: str,
    topic: str,
    *,
    expected: int | None = None,
    idle_timeout_s: float = 5.0,
    max_wait_s: float = 300.0,
    deserialize: Callable[[bytes], Any] | None = json.loads,
    group_id: str | None = None,
) -> Iterator[tuple[Any, Any]]:
    """Yield (key, value) from the start of ``topic`` until ``expected`` records were read,
    or no record arrived for ``idle_timeout_s``, or ``max_wait_s`` passed."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group_id, **CONSUMER_DEFAULTS)
    try:
        parts = consumer.partitions_for_topic(topic) or {0}
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        n = 0
        start = last = time.monotonic()
        while True:
            batch = consumer.poll(timeout_ms=500, max_records=5000)
            now = time.monotonic()
            for recs in batch.values():
                for r in recs:
                    key = r.key.decode() if r.key is not None else None
                    value = deserialize(r.value) if deserialize else r.value
                    yield key, value
                    n += 1
                last = now
            if expected is not None and n >= expected:
                return
            if now - last > idle_timeout_s or now - start > max_wait_s:
                return
    finally:
        consumer.close()


def read_all(bootstrap: str, topic: str, **kw: Any) -> list[Any]:
    return [v for _, v in consume(bootstrap, topic, **kw)]
