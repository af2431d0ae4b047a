"""Feature writer: Kafka ``features`` -> offline parquet + Feast online (Redis) + ClickHouse.

``candleflow features write`` runs it. One consumer in a consumer group reads the topic in
micro-batches (up to ``max_batch`` messages or ``max_wait_ms``) and, per batch:

1. parses and validates every message; a malformed one goes to the dead-letter topic
   (``topic_features_dlq``) with a reason and its source partition/offset;
2. writes the batch to the three stores, in this order: DLQ records (flushed), the offline
   store (one parquet part file, ``FeatureStoreClient.write_offline``), the online store
   (``push_online``: the newest row per symbol/timeframe of the batch), ClickHouse (table
   ``features``, rows from ``infra.clickhouse.features_row``);
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
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, Any

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

from infra.clickhouse import FEATURES_BASE_COLUMNS, features_row, iso_to_ms
from infra.settings import Settings
from udfs.indicators import FEATURE_NAMES

if TYPE_CHECKING:
    import pandas as pd

    from infra.clickhouse import ClickHouseStore
    from infra.feature_store import FeatureStoreClient

log = logging.getLogger(__name__)

DETECTED_BY = "feature_writer"
# test-only: sleep this long between the ClickHouse insert and the commit (SIGKILL tests)
PAUSE_ENV = "CANDLEFLOW_WRITER_PAUSE_BEFORE_COMMIT_S"
TABLE = "features"

_STR_FIELDS = ("feature_key", "symbol", "timeframe")
_INT_FIELDS = ("window_start_ms", "window_end_ms", "trade_count")
_NUM_FIELDS = ("open", "high", "low", "close", "volume", "vwap")
_TS_FIELDS = ("event_time", "computed_at")
REQUIRED = (*FEATURES_BASE_COLUMNS, *FEATURE_NAMES, "features_ready", *_TS_FIELDS)


# ------------------------------------------------------------------------- validation
class InvalidFeatureRow(ValueError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def parse_feature_message(raw: bytes | None) -> dict[str, Any]:
    """A ``features`` message -> its JSON object, or :class:`InvalidFeatureRow` with a reason.

    The fields are those of ``sql/flink/features.sql``'s sink (extra fields are dropped);
    prices and the bar must be present, features may be null (warm-up), timestamps are
    Flink's ISO-8601 text. Whatever passes here fits the ClickHouse table and Feast.
    """
    if raw is None or not raw:
        raise InvalidFeatureRow("empty message")
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InvalidFeatureRow(f"not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise InvalidFeatureRow("not a JSON object")
    missing = [f for f in REQUIRED if f not in obj]
    if missing:
        raise InvalidFeatureRow(f"missing fields: {', '.join(missing[:5])}")
    for f in _STR_FIELDS:
        if not isinstance(obj[f], str) or not obj[f]:
            raise InvalidFeatureRow(f"{f}: expected a non-empty string")
    for f in _INT_FIELDS:
        v = obj[f]
        if isinstance(v, float) and v.is_integer():
            obj[f] = v = int(v)
        if not isinstance(v, int) or isinstance(v, bool):
            raise InvalidFeatureRow(f"{f}: expected an integer")
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
    payload = (raw or b"").decode("utf-8", errors="replace")
    return json.dumps(
        {
            "reason": reason,
            "payload": payload,
            "source_topic": topic,
            "source_partition": partition,
            "source_offset": offset,
            "detected_by": DETECTED_BY,
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

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> WriterConfig:
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
    rows: list[dict[str, Any]] = field(default_factory=list)
    dlq: list[tuple[str, bytes]] = field(default_factory=list)  # (reason, record)
    next_offsets: dict[int, int] = field(default_factory=dict)  # partition -> last + 1
    first_offsets: dict[int, int] = field(default_factory=dict)
    messages: int = 0


@dataclass
class WriterStats:
    rows: int = 0
    dead_lettered: int = 0
    batches: int = 0
    commits_failed: int = 0
    retries: dict[str, int] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)
    ready_at: float = 0.0  # after migrations, Feast import/apply, consumer created
    first_row_at: float = 0.0  # first message of the run received
    last_commit_at: float = 0.0
    # (monotonic time of the commit, rows in the batch, seconds spent writing it)
    batch_log: list[tuple[float, int, float]] = field(default_factory=list)
    committed: dict[int, int] = field(default_factory=dict)
    dlq_reasons: dict[str, int] = field(default_factory=dict)
    step_s: dict[str, float] = field(default_factory=dict)  # seconds per write step, summed


# ----------------------------------------------------------------------------- writer
class FeatureWriter:
    """Kafka ``features`` -> offline + online + ClickHouse, commit after all three."""

    def __init__(
        self,
        settings: Settings,
        config: WriterConfig | None = None,
        *,
        client: FeatureStoreClient | None = None,
    ) -> None:
        self.settings = settings
        self.config = config or WriterConfig.from_settings(settings)
        self.topic = settings.topic_features
        self.stats = WriterStats()
        self._client = client
        self._store: ClickHouseStore | None = None
        self._consumer: Any = None
        self._producer: Any = None
        self._stop = False
        self._assigned_at = 0.0
        self._last_msg_at = 0.0
        self._pause_s = float(os.environ.get(PAUSE_ENV, "0") or 0)

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
        """One-time start costs: topics, ClickHouse migrations, Feast import + apply, the
        consumer. Migrations and apply are idempotent."""
        from confluent_kafka import Consumer, Producer

        from infra.kafka import ensure_topics

        s = self.settings
        t0 = time.monotonic()
        ensure_topics(s.kafka_bootstrap, [self.topic, s.topic_features_dlq], s.topic_partitions)
        self._retrying("clickhouse migrate", self._migrate)
        t1 = time.monotonic()
        if self._client is None:
            from infra.feature_store import FeatureStoreClient  # Feast: ~9 s, once

            self._client = FeatureStoreClient(s)
        self._client.apply()
        t2 = time.monotonic()
        self._producer = Producer(
            {"bootstrap.servers": s.kafka_bootstrap, "acks": "all", "linger.ms": 5}
        )
        self._consumer = Consumer(
            {
                "bootstrap.servers": s.kafka_bootstrap,
                "group.id": self.config.group_id,
                "client.id": f"feature-writer-{os.getpid()}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 6_000,
                "heartbeat.interval.ms": 1_000,
                "max.poll.interval.ms": 600_000,
                "isolation.level": "read_committed",
            }
        )
        self._consumer.subscribe([self.topic], on_assign=self._on_assign)
        self.stats.ready_at = time.monotonic()
        log.info(
            "feature writer ready in %.1f s (ClickHouse %s %.1f s, Feast %.1f s): "
            "%s -> offline %s + Redis %s:%d + ClickHouse; group %r, batches of <= %d / %d ms",
            self.stats.ready_at - t0,
            self._store.backend if self._store else "?",
            t1 - t0,
            t2 - t1,
            self.topic,
            s.feast_offline_dir,
            s.redis_host,
            s.redis_port,
            self.config.group_id,
            self.config.max_batch,
            self.config.max_wait_ms,
        )

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        self._assigned_at = time.monotonic()
        log.info("assigned %s", [f"{p.topic}[{p.partition}]" for p in partitions])

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

    def __enter__(self) -> FeatureWriter:
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
        p, off, raw = m.partition(), m.offset(), m.value()
        if not self.stats.first_row_at:
            self.stats.first_row_at = time.monotonic()
        batch.messages += 1
        batch.first_offsets.setdefault(p, off)
        batch.next_offsets[p] = off + 1
        try:
            batch.rows.append(parse_feature_message(raw))
        except InvalidFeatureRow as e:
            batch.dlq.append((e.reason, dlq_record(e.reason, raw, self.topic, p, off)))

    # -- one batch -----------------------------------------------------------------------
    def _write_and_commit(self, batch: Batch) -> None:
        t0 = time.monotonic()
        frame: pd.DataFrame | None = None
        if batch.rows:
            from infra.feature_store import to_feature_frame

            frame = to_feature_frame(batch.rows)
            self._add_time("frame", t0)
        if batch.dlq:
            self._retrying("dead-letter topic", lambda: self._send_dlq(batch))
        if frame is not None:
            self._retrying("offline store", lambda: self._write_offline(frame))
            self._retrying("online store (Redis)", lambda: self._push_online(frame))
            self._retrying("ClickHouse", lambda: self._insert_clickhouse(batch.rows))
        if self._pause_s:
            log.warning(
                "%s: pausing %.1f s before the commit (test knob)", PAUSE_ENV, self._pause_s
            )
            time.sleep(self._pause_s)
        t_commit = time.monotonic()
        self._commit(batch)
        self._add_time("commit", t_commit)
        dt = time.monotonic() - t0
        self.stats.batches += 1
        self.stats.rows += len(batch.rows)
        self.stats.dead_lettered += len(batch.dlq)
        for reason, _ in batch.dlq:
            self.stats.dlq_reasons[reason] = self.stats.dlq_reasons.get(reason, 0) + 1
        self.stats.last_commit_at = time.monotonic()
        self.stats.batch_log.append((self.stats.last_commit_at, len(batch.rows), dt))
        log.debug(
            "batch %d: %d rows, %d dead-lettered, offsets %s..%s, %.0f ms",
            self.stats.batches,
            len(batch.rows),
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

        for reason, rec in batch.dlq:
            log.warning("dead-lettered a `%s` message: %s", self.topic, reason)
            self._producer.produce(self.settings.topic_features_dlq, rec, on_delivery=on_delivery)
        left = self._producer.flush(30)
        if left or failed:
            raise TransientError(f"DLQ: {left} undelivered, errors {failed[:3]}")

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

    def _migrate(self) -> None:
        store = self._connect()
        applied = store.migrate()
        if applied:
            log.info("ClickHouse migrations applied: %s", ", ".join(applied))

    def _connect(self) -> ClickHouseStore:
        from infra.clickhouse import connect

        if self._store is None:
            self._store = connect(self.settings)
        return self._store

    def _insert_clickhouse(self, rows: Sequence[Mapping[str, Any]]) -> None:
        store = self._connect()
        try:
            store.insert(TABLE, [features_row(r) for r in rows])
        except Exception as e:
            if is_transient(e) and store.backend == "server":
                self._store = None  # reconnect on the next attempt
                with contextlib.suppress(Exception):  # the connection is already broken
                    store.close()
            raise

    def _commit(self, batch: Batch) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        offsets = [TopicPartition(self.topic, p, o) for p, o in sorted(batch.next_offsets.items())]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
            self.stats.committed.update(batch.next_offsets)
        except KafkaException as e:
            # e.g. the group rebalanced during a long retry: the batch is written, a new
            # owner re-reads it from the last commit and re-writes it (idempotent)
            self.stats.commits_failed += 1
            log.warning("commit of %s failed (%s); the rows will be re-delivered", offsets, e)

    # -- retries -------------------------------------------------------------------------
    def _add_time(self, step: str, since: float) -> None:
        st = self.stats.step_s
        st[step] = st.get(step, 0.0) + time.monotonic() - since

    def _retrying(self, what: str, fn: Callable[[], None]) -> None:
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
    def lag(self) -> dict[int, int]:
        """Per partition: high watermark - committed position (approximate on Tansu, whose
        high watermark is the base offset of the last batch + 1)."""
        from confluent_kafka import TopicPartition

        out: dict[int, int] = {}
        if self._consumer is None:
            return out
        try:
            for tp in self._consumer.assignment():
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), timeout=2, cached=False
                )
                pos = self.stats.committed.get(tp.partition, 0)
                out[tp.partition] = max(high - pos, 0)
        except Exception as e:  # lag is informational only
            log.debug("lag lookup failed: %s", e)
        return out

    def _log_progress(self, interval_s: float, rows: int, *, final: bool = False) -> None:
        st = self.stats
        total_s = (st.last_commit_at or time.monotonic()) - (st.first_row_at or st.ready_at)
        rate = rows / interval_s if interval_s else (st.rows / total_s if total_s > 0 else 0.0)
        log.info(
            "%s%d rows in %d batches (%s rows/s), dead-lettered %d, committed %s, lag %s%s",
            "done: " if final else "",
            st.rows,
            st.batches,
            f"{rate:,.0f}",
            st.dead_lettered,
            st.committed,
            self.lag(),
            f", retries {st.retries}" if st.retries else "",
        )


class _StopRequested(stop_base):
    def __init__(self, writer: FeatureWriter) -> None:
        self.writer = writer

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.writer._stop


def _short(exc: BaseException | None) -> str:
    if exc is None:
        return "?"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:200]}"


def run_writer(settings: Settings, config: WriterConfig) -> WriterStats:
    """``candleflow features write``: start, install SIGTERM/SIGINT handlers, run, close."""
    writer = FeatureWriter(settings, config)
    writer.install_signal_handlers()
    try:
        writer.start()
        return writer.run()
    finally:
        writer.close()
