"""The micro-batch Kafka -> stores loop shared by the writers (features, trading).

A :class:`KafkaBatchWriter` subclass says which topics it reads, how a message becomes a row
(:meth:`~KafkaBatchWriter.parse`, raising :class:`InvalidMessage` with a reason) and how a
batch is written (:meth:`~KafkaBatchWriter._write`, each step through
:meth:`~KafkaBatchWriter._retrying`). The base does the rest, the same way for every writer:

1. one consumer in a consumer group reads the topics in micro-batches (up to ``max_batch``
   messages or ``max_wait_ms``), no auto-commit, ``read_committed``;
2. a malformed message goes to its topic's dead-letter topic with a reason and its source
   topic/partition/offset (the record shape of ``trades_dlq``), flushed before anything else
   is written;
3. the subclass writes the batch; a transient failure (store or broker unreachable) is
   retried with exponential backoff (capped at ``max_backoff_s``; forever by default), step
   by step, so a step that succeeded is not redone; anything else stops the writer;
4. the batch's end offsets are committed, synchronously, only after all of that succeeded.

Delivery is at-least-once: a crash before the commit re-delivers the batch, so the writes
must be idempotent (ClickHouse ReplacingMergeTree keys + ``FINAL``). SIGTERM/SIGINT finish
(write + commit) the current batch, then stop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, Any, ClassVar, Self

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    stop_any,
    stop_never,
    wait_exponential,
)
from tenacity.stop import stop_base

from infra.settings import Settings

if TYPE_CHECKING:
    from infra.clickhouse import ClickHouseStore

log = logging.getLogger(__name__)

# test-only: sleep this long between the last write and the commit (SIGKILL tests)
PAUSE_ENV = "CANDLEFLOW_WRITER_PAUSE_BEFORE_COMMIT_S"


# ------------------------------------------------------------------------- validation
class InvalidMessage(ValueError):
    """A message that cannot become a row; ``reason`` goes into its dead-letter record."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def json_object(
    raw: bytes | None,
    required: Sequence[str],
    *,
    strings: Sequence[str] = (),
    integers: Sequence[str] = (),
    error: type[InvalidMessage] = InvalidMessage,
) -> dict[str, Any]:
    """A message -> its JSON object with every ``required`` field, the ``strings`` non-empty
    strings and the ``integers`` ints (an integral float becomes an int); else ``error``
    with the reason (the same reasons for every writer's dead-letter records)."""
    if not raw:
        raise error("empty message")
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise error("not a JSON object")
    missing = [f for f in required if f not in obj]
    if missing:
        raise error(f"missing fields: {', '.join(missing[:5])}")
    for f in strings:
        if not isinstance(obj[f], str) or not obj[f]:
            raise error(f"{f}: expected a non-empty string")
    for f in integers:
        v = obj[f]
        if isinstance(v, float) and v.is_integer():
            obj[f] = v = int(v)
        if not isinstance(v, int) or isinstance(v, bool):
            raise error(f"{f}: expected an integer")
    return obj


def dlq_record(
    reason: str, raw: bytes | None, topic: str, partition: int, offset: int, detected_by: str
) -> bytes:
    """Same shape as ``trades_dlq`` records (jobs/ingest/schema.py), with the source offset."""
    payload = (raw or b"").decode("utf-8", errors="replace")
    return json.dumps(
        {
            "reason": reason,
            "payload": payload,
            "source_topic": topic,
            "source_partition": partition,
            "source_offset": offset,
            "detected_by": detected_by,
            "detected_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
        }
    ).encode()


# ---------------------------------------------------------------------------- retries
class TransientError(RuntimeError):
    """A store or the broker did not answer; the write is retried."""


def is_transient(exc: BaseException) -> bool:
    """Errors that mean "not reachable now" (retry), as opposed to bad data or bugs (stop)."""
    import redis

    from infra.clickhouse import ClickHouseError

    if isinstance(exc, TransientError | ConnectionError | TimeoutError | EOFError):
        return True
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):  # incl. BusyLoadingError
        return True
    if isinstance(exc, ClickHouseError) and "cannot reach" in str(exc):
        return True
    try:
        from clickhouse_driver import errors as ch_errors

        if isinstance(exc, ch_errors.NetworkError | ch_errors.SocketTimeoutError):
            return True
        # server-side: too many parts / memory limit / timeouts are load, not bad data
        if isinstance(exc, ch_errors.ServerException) and exc.code in (159, 209, 210, 241, 252):
            return True
    except ImportError:  # pragma: no cover
        pass
    return isinstance(exc, OSError)


# ----------------------------------------------------------------------------- config
@dataclass
class WriterConfig:
    group_id: str
    max_batch: int = 5_000
    max_wait_ms: int = 1_000
    until_idle_s: float = 0.0  # stop after this long without messages (0 = run forever)
    once: bool = False  # stop after one non-empty batch
    log_every_s: float = 5.0
    max_backoff_s: float = 10.0
    retry_timeout_s: float = 0.0  # give up on a transient failure after this (0 = never)
    from_beginning: bool = False  # first assignment: start at the earliest offsets (replay)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> WriterConfig:
        """Batch/backoff settings of ``settings``; ``group_id`` defaults to the feature
        writer's group. Overrides that are ``None`` are ignored."""
        cfg = cls(
            group_id=settings.writer_group_id,
            max_batch=settings.writer_max_batch,
            max_wait_ms=settings.writer_max_wait_ms,
            max_backoff_s=settings.writer_max_backoff_s,
        )
        for k, v in overrides.items():
            if v is not None:
                setattr(cfg, k, v)
        return cfg


@dataclass
class Batch:
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # topic -> rows
    dlq: list[tuple[str, str, bytes]] = field(default_factory=list)  # (reason, topic, record)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # last + 1
    first_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    messages: int = 0

    @property
    def n_rows(self) -> int:
        return sum(len(r) for r in self.rows.values())


@dataclass
class WriterStats:
    rows: int = 0
    dead_lettered: int = 0
    batches: int = 0
    commits_failed: int = 0
    retries: dict[str, int] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)
    ready_at: float = 0.0  # after the one-time start work and the consumer
    first_row_at: float = 0.0  # first message of the run received
    last_commit_at: float = 0.0
    # (monotonic time of the commit, rows in the batch, seconds spent writing it)
    batch_log: list[tuple[float, int, float]] = field(default_factory=list)
    committed: dict[str, dict[int, int]] = field(default_factory=dict)  # topic -> p -> offset
    rows_by_topic: dict[str, int] = field(default_factory=dict)
    dlq_reasons: dict[str, int] = field(default_factory=dict)
    step_s: dict[str, float] = field(default_factory=dict)  # seconds per write step, summed


# ----------------------------------------------------------------------------- writer
class KafkaBatchWriter(ABC):
    """Consume ``topics`` in micro-batches, dead-letter bad messages, write, then commit."""

    name: ClassVar[str] = "writer"  # in log lines and the Kafka client id
    detected_by: ClassVar[str] = "writer"  # in dead-letter records

    def __init__(self, settings: Settings, config: WriterConfig, topics: Sequence[str]) -> None:
        if not topics:
            raise ValueError("a writer reads at least one topic")
        self.settings = settings
        self.config = config
        self.topics = list(topics)
        self.stats = WriterStats()
        self._store: ClickHouseStore | None = None
        self._consumer: Any = None
        self._producer: Any = None
        self._stop = False
        self._assigned_at = 0.0
        self._rewound = False
        self._last_msg_at = 0.0
        self._pause_s = float(os.environ.get(PAUSE_ENV, "0") or 0)

    # -- what a subclass provides --------------------------------------------------------
    @abstractmethod
    def dlq_topic(self, topic: str) -> str:
        """The dead-letter topic of ``topic``."""

    @abstractmethod
    def parse(self, topic: str, raw: bytes | None) -> dict[str, Any]:
        """A message of ``topic`` -> its row, or :class:`InvalidMessage` with a reason."""

    @abstractmethod
    def _prepare(self) -> str:
        """One-time start work (migrations, ...); returns what the ready log line shows."""

    @abstractmethod
    def _write(self, batch: Batch) -> None:
        """Write the batch's rows; each step through :meth:`_retrying`."""

    # -- lifecycle -----------------------------------------------------------------------
    def request_stop(self, *_: Any) -> None:
        """Finish (write + commit) the current batch, then stop."""
        self._stop = True

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("signal %d: finishing the current batch, then stopping", signum)
            self.request_stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def start(self) -> None:
        """Topics, the subclass's one-time work, the producer (DLQ) and the consumer."""
        from confluent_kafka import Consumer, Producer

        from infra.kafka import ensure_topics

        s = self.settings
        t0 = time.monotonic()
        dlqs = [self.dlq_topic(t) for t in self.topics]
        ensure_topics(s.kafka_bootstrap, [*self.topics, *dlqs], s.topic_partitions)
        prepared = self._prepare()
        self._producer = Producer(
            {"bootstrap.servers": s.kafka_bootstrap, "acks": "all", "linger.ms": 5}
        )
        self._consumer = Consumer(
            {
                "bootstrap.servers": s.kafka_bootstrap,
                "group.id": self.config.group_id,
                "client.id": f"{self.name.replace(' ', '-')}-{os.getpid()}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 6_000,
                "heartbeat.interval.ms": 1_000,
                "max.poll.interval.ms": 600_000,
                "isolation.level": "read_committed",
            }
        )
        self._consumer.subscribe(self.topics, on_assign=self._on_assign)
        self.stats.ready_at = time.monotonic()
        log.info(
            "%s ready in %.1f s (%s); group %r%s, batches of <= %d / %d ms",
            self.name,
            self.stats.ready_at - t0,
            prepared,
            self.config.group_id,
            " from the beginning" if self.config.from_beginning else "",
            self.config.max_batch,
            self.config.max_wait_ms,
        )

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self._assigned_at = time.monotonic()
        if self.config.from_beginning and not self._rewound:
            from confluent_kafka import OFFSET_BEGINNING

            for p in partitions:
                p.offset = OFFSET_BEGINNING
            consumer.assign(partitions)
            self._rewound = True  # a later rebalance resumes from the commits
        log.info(
            "assigned %s%s",
            [f"{p.topic}[{p.partition}]" for p in partitions],
            " (from the beginning)" if self._rewound and self.config.from_beginning else "",
        )

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()  # leaves the group now (no session timeout for others)
            self._consumer = None
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None
        if self._store is not None:
            self._store.close()
            self._store = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- main loop -----------------------------------------------------------------------
    def run(self) -> WriterStats:
        """Consume, write, commit until stopped (signal, ``once``, ``until_idle_s``)."""
        if self._consumer is None:
            self.start()
        cfg = self.config
        last_log = time.monotonic()
        rows_at_last_log = 0
        while not self._stop:
            t_poll = time.monotonic()
            batch = self._poll_batch()
            now = time.monotonic()
            if batch.messages:
                self._add_time("poll+parse", t_poll)
                self._last_msg_at = now
                self._write_and_commit(batch)
                if cfg.once:
                    break
            elif cfg.until_idle_s and self._assigned_at:
                idle_since = max(self._last_msg_at, self._assigned_at)
                if now - idle_since >= cfg.until_idle_s:
                    log.info("no messages for %.0f s: stopping", now - idle_since)
                    break
            if now - last_log >= cfg.log_every_s:
                self._log_progress(now - last_log, self.stats.rows - rows_at_last_log)
                last_log, rows_at_last_log = now, self.stats.rows
        self._log_progress(0, 0, final=True)
        return self.stats

    def _poll_batch(self) -> Batch:
        from confluent_kafka import KafkaError

        cfg = self.config
        batch = Batch()
        deadline = time.monotonic() + cfg.max_wait_ms / 1000
        while batch.messages < cfg.max_batch and not self._stop:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            msgs = self._consumer.consume(num_messages=cfg.max_batch - batch.messages, timeout=left)
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer error: %s", err)
                    continue
                self._add(batch, m)
        return batch

    def _add(self, batch: Batch, m: Any) -> None:
        topic, p, off, raw = m.topic(), m.partition(), m.offset(), m.value()
        if not self.stats.first_row_at:
            self.stats.first_row_at = time.monotonic()
        batch.messages += 1
        batch.first_offsets.setdefault((topic, p), off)
        batch.next_offsets[(topic, p)] = off + 1
        try:
            batch.rows.setdefault(topic, []).append(self.parse(topic, raw))
        except InvalidMessage as e:
            rec = dlq_record(e.reason, raw, topic, p, off, self.detected_by)
            batch.dlq.append((e.reason, topic, rec))

    # -- one batch -----------------------------------------------------------------------
    def _write_and_commit(self, batch: Batch) -> None:
        t0 = time.monotonic()
        if batch.dlq:
            self._retrying("dead-letter topic", lambda: self._send_dlq(batch))
        if batch.n_rows:
            self._write(batch)
        if self._pause_s:
            log.warning(
                "%s: pausing %.1f s before the commit (test knob)", PAUSE_ENV, self._pause_s
            )
            time.sleep(self._pause_s)
        t_commit = time.monotonic()
        self._commit(batch)
        self._add_time("commit", t_commit)
        dt = time.monotonic() - t0
        st = self.stats
        st.batches += 1
        st.rows += batch.n_rows
        for topic, rows in batch.rows.items():
            st.rows_by_topic[topic] = st.rows_by_topic.get(topic, 0) + len(rows)
        st.dead_lettered += len(batch.dlq)
        for reason, _, _ in batch.dlq:
            st.dlq_reasons[reason] = st.dlq_reasons.get(reason, 0) + 1
        st.last_commit_at = time.monotonic()
        _count_batch(self.name, batch)
        st.batch_log.append((st.last_commit_at, batch.n_rows, dt))
        log.debug(
            "batch %d: %d rows, %d dead-lettered, offsets %s..%s, %.0f ms",
            st.batches,
            batch.n_rows,
            len(batch.dlq),
            batch.first_offsets,
            batch.next_offsets,
            dt * 1000,
        )

    def _send_dlq(self, batch: Batch) -> None:
        failed: list[str] = []

        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                failed.append(str(err))

        for reason, topic, rec in batch.dlq:
            log.warning("dead-lettered a `%s` message: %s", topic, reason)
            self._producer.produce(self.dlq_topic(topic), rec, on_delivery=on_delivery)
        left = self._producer.flush(30)
        if left or failed:
            raise TransientError(f"DLQ: {left} undelivered, errors {failed[:3]}")

    def _commit(self, batch: Batch) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(batch.next_offsets.items())]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
            for (t, p), o in batch.next_offsets.items():
                self.stats.committed.setdefault(t, {})[p] = o
        except KafkaException as e:
            # e.g. the group rebalanced during a long retry: the batch is written, a new
            # owner re-reads it from the last commit and re-writes it (idempotent)
            self.stats.commits_failed += 1
            log.warning("commit of %s failed (%s); the rows will be re-delivered", offsets, e)

    # -- ClickHouse ----------------------------------------------------------------------
    def _connect(self) -> ClickHouseStore:
        from infra.clickhouse import connect

        if self._store is None:
            self._store = connect(self.settings)
        return self._store

    def _migrate(self) -> None:
        store = self._connect()
        applied = store.migrate()
        if applied:
            log.info("ClickHouse migrations applied: %s", ", ".join(applied))

    def _insert_clickhouse(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert; after a transient error on a server, reconnect on the next attempt."""
        store = self._connect()
        try:
            store.insert(table, rows)
        except Exception as e:
            if is_transient(e) and store.backend == "server":
                self._store = None
                with contextlib.suppress(Exception):  # the connection is already broken
                    store.close()
            raise

    # -- retries -------------------------------------------------------------------------
    def _add_time(self, step: str, since: float) -> None:
        st = self.stats.step_s
        st[step] = st.get(step, 0.0) + time.monotonic() - since

    def _retrying(self, what: str, fn: Callable[[], None]) -> None:
        """Run ``fn``; retry transient errors with backoff (logged), re-raise the rest."""
        cfg = self.config
        t0 = time.monotonic()
        first_failure: list[float] = []

        def before_sleep(rs: RetryCallState) -> None:
            exc = rs.outcome.exception() if rs.outcome else None
            if not first_failure:
                first_failure.append(time.monotonic())
                log.warning("%s: write failed (%s); retrying with backoff", what, _short(exc))
            self.stats.retries[what] = self.stats.retries.get(what, 0) + 1
            log.warning(
                "%s still failing after %d attempt(s), %.1f s: %s; next try in %.1f s",
                what,
                rs.attempt_number,
                time.monotonic() - first_failure[0],
                _short(exc),
                rs.upcoming_sleep,
            )

        retrying = Retrying(
            retry=retry_if_exception(is_transient),
            wait=wait_exponential(multiplier=0.2, max=cfg.max_backoff_s),
            stop=stop_any(  # SIGTERM while retrying: stop, no commit
                stop_after_delay(cfg.retry_timeout_s) if cfg.retry_timeout_s else stop_never,
                _StopRequested(self),
            ),
            before_sleep=before_sleep,
            reraise=True,
        )
        retrying(fn)
        self._add_time(what, t0)
        if first_failure:
            log.warning(
                "%s recovered: written after %.1f s of failures",
                what,
                time.monotonic() - first_failure[0],
            )

    # -- progress ------------------------------------------------------------------------
    def lag(self) -> dict[str, int]:
        """Per ``topic[partition]``: high watermark - committed position (approximate on
        Tansu, whose high watermark is the base offset of the last batch + 1)."""
        from confluent_kafka import TopicPartition

        out: dict[str, int] = {}
        if self._consumer is None:
            return out
        try:
            for tp in self._consumer.assignment():
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), timeout=2, cached=False
                )
                pos = self.stats.committed.get(tp.topic, {}).get(tp.partition, 0)
                out[f"{tp.topic}[{tp.partition}]"] = max(high - pos, 0)
        except Exception as e:  # lag is informational only
            log.debug("lag lookup failed: %s", e)
        return out

    def _log_progress(self, interval_s: float, rows: int, *, final: bool = False) -> None:
        st = self.stats
        total_s = (st.last_commit_at or time.monotonic()) - (st.first_row_at or st.ready_at)
        rate = rows / interval_s if interval_s else (st.rows / total_s if total_s > 0 else 0.0)
        per_topic = f" {st.rows_by_topic}" if len(self.topics) > 1 else ""
        log.info(
            "%s%d rows%s in %d batches (%s rows/s), dead-lettered %d, committed %s, lag %s%s",
            "done: " if final else "",
            st.rows,
            per_topic,
            st.batches,
            f"{rate:,.0f}",
            st.dead_lettered,
            st.committed,
            self.lag(),
            f", retries {st.retries}" if st.retries else "",
        )


def _count_batch(writer: str, batch: Batch) -> None:
    """Prometheus counters of a committed batch (infra/freshness.py)."""
    from infra.freshness import count_batch

    dlq: dict[str, int] = {}
    for _, topic, _ in batch.dlq:
        dlq[topic] = dlq.get(topic, 0) + 1
    count_batch(writer, {t: len(r) for t, r in batch.rows.items()}, dlq)


class _StopRequested(stop_base):
    def __init__(self, writer: KafkaBatchWriter) -> None:
        self.writer = writer

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.writer._stop


def _short(exc: BaseException | None) -> str:
    if exc is None:
        return "?"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}"
