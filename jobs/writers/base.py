"""The micro-batch Kafka -> stores loop shared by the writers (candles, features, trading).

A :class:`KafkaBatchWriter` subclass says which topics it reads, how a message becomes a row
(:meth:`~KafkaBatchWriter.parse`, raising :class:`~jobs.writers.validation.InvalidMessage`
with a reason) and how a batch is written (:meth:`~KafkaBatchWriter._write`, each step
through :meth:`~KafkaBatchWriter._retrying`). The base does the rest, the same way for every
writer:

1. one consumer in a consumer group reads the topics in micro-batches (up to ``max_batch``
   messages or ``max_wait_ms``), no auto-commit, ``read_committed``;
2. a message that cannot be stored goes to its topic's dead-letter topic with a reason and
   its source topic/partition/offset (the record shape of ``trades_dlq``), flushed before
   anything else is written. "Cannot be stored" is decided field by field against the
   target columns (:class:`~jobs.writers.validation.Column`: the ClickHouse type of each
   column, the DateTime span of the epoch-ms fields, finiteness, valid strings), in the
   parse step, so no later store sees a value it cannot hold;
3. the subclass writes the batch; a transient failure (store or broker unreachable,
   :func:`~jobs.writers.errors.is_transient`) is retried with exponential backoff (capped
   at ``max_backoff_s``; forever by default), step by step, so a step that succeeded is not
   redone. A store that rejects the batch's *data*
   (:func:`~jobs.writers.errors.is_data_error`: a type/overflow/constraint error, a pandas
   out-of-bounds, ...) is the second line of defence: the batch is bisected and re-written
   in halves until the message(s) the store rejects on their own are isolated; those are
   dead-lettered with the store's error as the reason, the rest is written. Anything else
   (a bug, a missing table) stops the writer without a commit;
4. the batch's end offsets are committed, synchronously, only after all of that succeeded.
   A message is committed either written or dead-lettered: none can stop the stream, and
   none is retried forever.

Delivery is at-least-once: a crash before the commit re-delivers the batch, so the writes
must be idempotent (ClickHouse ReplacingMergeTree keys + ``FINAL``). SIGTERM/SIGINT finish
(write + commit) the current batch, then stop.

This module holds the loop (:class:`KafkaBatchWriter`); its parts live by role next to it:
:mod:`~jobs.writers.validation` (field-by-field checks), :mod:`~jobs.writers.dlq`
(dead-letter records), :mod:`~jobs.writers.errors` (transient / data error classes),
:mod:`~jobs.writers.retry` (the retried steps), :mod:`~jobs.writers.config` (config, batch,
stats), :mod:`~jobs.writers.positions` (commits, broker-reset checks) and
:mod:`~jobs.writers.metrics` (step times, lag, progress lines).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any, ClassVar, Self

from infra.kafka import BrokerReset
from infra.settings import Settings
from jobs.writers.config import Batch, Source, WriterConfig, WriterStats
from jobs.writers.dlq import dlq_record
from jobs.writers.errors import RowsRejected, TransientError, _short, is_data_error, is_transient
from jobs.writers.metrics import _count_batch
from jobs.writers.positions import PositionsMixin, _safe_name
from jobs.writers.retry import RetryingMixin
from jobs.writers.validation import InvalidMessage

if TYPE_CHECKING:
    from infra.clickhouse import ClickHouseStore

log = logging.getLogger(__name__)

# test-only: sleep this long between the last write and the commit (SIGKILL tests)
PAUSE_ENV = "CANDLEFLOW_WRITER_PAUSE_BEFORE_COMMIT_S"


class KafkaBatchWriter(PositionsMixin, RetryingMixin, ABC):
    """Consume ``topics`` in micro-batches, dead-letter bad messages, write, then commit.

    The group's committed positions are also kept in ``STATE_DIR/writer-positions/<group>
    .json``; a broker that lost the group's commits (or a log that now ends before the
    position) stops the writer with :class:`BrokerReset` instead of re-reading from offset 0
    what is left. Offsets an operator resets on purpose are commits, and are followed.
    """

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
        self._fatal: BrokerReset | None = None
        self._positions_file = (
            settings.state_dir / "writer-positions" / f"{_safe_name(config.group_id)}.json"
        )
        self._positions: dict[str, int] = self._load_positions()
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
                # no silent restart at 0 when the position is past the log's end (a broker
                # that lost data): an error event, see _poll_batch; a partition without a
                # commit starts at the beginning explicitly (_on_assign)
                "auto.offset.reset": "error",
                "session.timeout.ms": 6_000,
                "heartbeat.interval.ms": 1_000,
                "max.poll.interval.ms": 600_000,
                "isolation.level": "read_committed",
                # Tansu holds an empty fetch up to this long even when data arrives meanwhile
                # (librdkafka's 500 ms default measured ~115 ms per message here)
                "fetch.wait.max.ms": s.kafka_fetch_max_wait_ms,
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
                    if err.code() == KafkaError._AUTO_OFFSET_RESET:
                        self._offset_out_of_range(m.topic(), m.partition(), err.str())
                    elif err.code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer error: %s", err)
                    continue
                self._add(batch, m)
            if self._fatal is not None:
                log.error("%s", self._fatal)
                raise self._fatal
        return batch

    def _add(self, batch: Batch, m: Any) -> None:
        topic, p, off, raw = m.topic(), m.partition(), m.offset(), m.value()
        if not self.stats.first_row_at:
            self.stats.first_row_at = time.monotonic()
        batch.messages += 1
        batch.first_offsets.setdefault((topic, p), off)
        batch.next_offsets[(topic, p)] = off + 1
        try:
            row = self.parse(topic, raw)
        except InvalidMessage as e:
            self._dead_letter(batch, e.reason, raw, topic, p, off)
            return
        except Exception as e:  # a parser bug must not stop the stream either
            log.exception("parsing a `%s` message (offset %d) failed", topic, off)
            self._dead_letter(batch, f"parse failed: {_short(e)}", raw, topic, p, off)
            return
        batch.rows.setdefault(topic, []).append(row)
        batch.sources.setdefault(topic, []).append(Source(p, off, raw))

    def _dead_letter(
        self, batch: Batch, reason: str, raw: bytes | None, topic: str, p: int, off: int
    ) -> None:
        rec = dlq_record(reason, raw, topic, p, off, self.detected_by)
        batch.dlq.append((reason, topic, rec))

    # -- one batch -----------------------------------------------------------------------
    def _write_and_commit(self, batch: Batch) -> None:
        t0 = time.monotonic()
        if batch.dlq:
            self._retrying("dead-letter topic", lambda: self._send_dlq(batch.dlq))
        if batch.n_rows:
            self._write_isolating(batch)
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

    def _write_isolating(self, batch: Batch) -> None:
        """:meth:`_write`; if a store rejects the batch's data (:func:`is_data_error`), the
        second line of defence: bisect the batch, re-write the halves, dead-letter each
        message a store rejects on its own (reason: the store's error), drop it from the
        batch. Transient and other errors propagate (no commit), as before."""
        try:
            self._write(batch)
            return
        except Exception as e:
            if not is_data_error(e):
                raise
            first: BaseException = e
        items = batch.items()
        log.error(
            "a store rejected a batch of %d rows (%s); isolating the message(s) it rejects",
            len(items),
            _short(first),
        )
        rejected: list[tuple[tuple[str, int], BaseException]] = []
        self._bisect(batch, items, first, rejected)
        fresh = Batch()
        for (topic, i), exc in rejected:
            reason = (
                exc.reason if isinstance(exc, RowsRejected) else f"write failed: {_short(exc, 300)}"
            )
            src = batch.sources.get(topic, [])
            if i < len(src):
                s = src[i]
                log.error("dead-lettered a `%s` message (offset %d): %s", topic, s.offset, reason)
                self._dead_letter(fresh, reason, s.raw, topic, s.partition, s.offset)
        drop = {(t, i) for (t, i), _ in rejected}
        for topic in list(batch.rows):
            keep = [i for i in range(len(batch.rows[topic])) if (topic, i) not in drop]
            batch.rows[topic] = [batch.rows[topic][i] for i in keep]
            if topic in batch.sources:
                batch.sources[topic] = [batch.sources[topic][i] for i in keep]
        if fresh.dlq:
            self._retrying("dead-letter topic", lambda: self._send_dlq(fresh.dlq))
            batch.dlq.extend(fresh.dlq)

    def _bisect(
        self,
        batch: Batch,
        items: list[tuple[str, int]],
        exc: BaseException,
        rejected: list[tuple[tuple[str, int], BaseException]],
    ) -> None:
        """``items`` failed with the data error ``exc``: write each half on its own."""
        if len(items) == 1:
            rejected.append((items[0], exc))
            return
        mid = len(items) // 2
        for half in (items[:mid], items[mid:]):
            try:
                self._write(batch.subset(half))
            except Exception as e:
                if not is_data_error(e):
                    raise
                log.warning("a part of %d rows was rejected too (%s)", len(half), _short(e))
                self._bisect(batch, half, e, rejected)

    def _send_dlq(self, dlq: Sequence[tuple[str, str, bytes]]) -> None:
        failed: list[str] = []

        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                failed.append(str(err))

        for reason, topic, rec in dlq:
            log.warning("dead-lettered a `%s` message: %s", topic, reason)
            self._producer.produce(self.dlq_topic(topic), rec, on_delivery=on_delivery)
        left = self._producer.flush(30)
        if left or failed:
            raise TransientError(f"DLQ: {left} undelivered, errors {failed[:3]}")

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
