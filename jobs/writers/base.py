"""The micro-batch Kafka -> stores loop shared by the writers (features, trading).

A :class:`KafkaBatchWriter` subclass says which topics it reads, how a message becomes a row
(:meth:`~KafkaBatchWriter.parse`, raising :class:`InvalidMessage` with a reason) and how a
batch is written (:meth:`~KafkaBatchWriter._write`, each step through
:meth:`~KafkaBatchWriter._retrying`). The base does the rest, the same way for every writer:

1. one consumer in a consumer group reads the topics in micro-batches (up to ``max_batch``
   messages or ``max_wait_ms``), no auto-commit, ``read_committed``;
2. a message that cannot be stored goes to its topic's dead-letter topic with a reason and
   its source topic/partition/offset (the record shape of ``trades_dlq``), flushed before
   anything else is written. "Cannot be stored" is decided field by field against the
   target columns (:class:`Column`: the ClickHouse type of each column, the DateTime span
   of the epoch-ms fields, finiteness, valid strings), in the parse step, so no later store
   sees a value it cannot hold;
3. the subclass writes the batch; a transient failure (store or broker unreachable,
   :func:`is_transient`) is retried with exponential backoff (capped at ``max_backoff_s``;
   forever by default), step by step, so a step that succeeded is not redone. A store that
   rejects the batch's *data* (:func:`is_data_error`: a type/overflow/constraint error, a
   pandas out-of-bounds, ...) is the second line of defence: the batch is bisected and
   re-written in halves until the message(s) the store rejects on their own are isolated;
   those are dead-lettered with the store's error as the reason, the rest is written.
   Anything else (a bug, a missing table) stops the writer without a commit;
4. the batch's end offsets are committed, synchronously, only after all of that succeeded.
   A message is committed either written or dead-lettered: none can stop the stream, and
   none is retried forever.

Delivery is at-least-once: a crash before the commit re-delivers the batch, so the writes
must be idempotent (ClickHouse ReplacingMergeTree keys + ``FINAL``). SIGTERM/SIGINT finish
(write + commit) the current batch, then stop.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import os
import re
import signal
import struct
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, Any, ClassVar, Self, TypeVar

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

from infra.clickhouse import iso_to_ms
from infra.kafka import BrokerReset
from infra.settings import Settings

if TYPE_CHECKING:
    from infra.clickhouse import ClickHouseStore

log = logging.getLogger(__name__)
T = TypeVar("T")

# test-only: sleep this long between the last write and the commit (SIGKILL tests)
PAUSE_ENV = "CANDLEFLOW_WRITER_PAUSE_BEFORE_COMMIT_S"


# ------------------------------------------------------------------------- validation
class InvalidMessage(ValueError):
    """A message that cannot become a row; ``reason`` goes into its dead-letter record."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# [lo, hi) of ClickHouse's integer types
INT_RANGES: dict[str, tuple[int, int]] = {
    **{f"Int{b}": (-(2 ** (b - 1)), 2 ** (b - 1)) for b in (8, 16, 32, 64)},
    **{f"UInt{b}": (0, 2**b) for b in (8, 16, 32, 64)},
}
# ClickHouse's DateTime (18.16 as today) is a UInt32 of seconds: an epoch-ms field that
# feeds one (``MATERIALIZED toDateTime(intDiv(ms, 1000))``, partitions, dashboards) must be
# in [0, 2**32 * 1000), i.e. 1970-01-01T00:00:00.000Z .. 2106-02-07T06:28:15.999Z. Every
# epoch-ms / ISO timestamp field is held to it: that span also fits pandas datetime64[ns]
# (1677..2262), the offline parquet's timestamp[us, UTC], Feast/Redis protobuf timestamps,
# Date (pnl_daily, to 2149) and keeps ``lag_ms`` differences inside Int64.
DATETIME_MS = (0, 2**32 * 1000)
IDENT_MAX_CHARS = 256  # identifiers (symbols, ids, keys of tables and of Feast entities)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# the ISO-8601 subset that Python (ClickHouse ms) and pandas (Feast, parquet) read alike:
# Flink's TIMESTAMP_LTZ text; no week dates, no comma fractions, no date-only values
# (ASCII digits only: \d would take any Unicode digit)
_ISO = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}"
    r"(?:\.[0-9]{1,9})?(?:Z|[+-][0-9]{2}:[0-9]{2})?"
)
_ISO_FORMAT = "YYYY-MM-DDTHH:MM:SS[.fff][Z|+HH:MM]"


def _safe_name(text: str) -> str:
    """A group id as a file name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text) or "_"


def ms_text(ms: int) -> str:
    """Epoch ms -> ``1970-01-01T00:00:00.000Z``."""
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def _bound(n: int) -> str:
    a = abs(n)
    if a >= 2**16 and a & (a - 1) == 0:
        return f"{'-' if n < 0 else ''}2**{a.bit_length() - 1}"
    return str(n)


def _show(v: Any, limit: int = 40) -> str:
    text = repr(v)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _storable_text(v: str) -> bool:
    """Encodable as UTF-8 (what ClickHouse, Arrow, Redis and protobuf need): no lone
    surrogates (JSON ``"\\ud800"`` decodes to one)."""
    if v.isascii():
        return True
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


@dataclass(frozen=True)
class Column:
    """What one message field must be for its target column(s) to hold it.

    ``ch_type`` is the ClickHouse type of the column the field is stored in, as written in
    sql/clickhouse/*.sql (tests/unit/test_writer_columns.py checks every writer's columns
    against the migrated tables); the check follows from it:

    - ``Int*``/``UInt*``: a JSON integer (an integral float too, e.g. ``3.0``; never a
      boolean) in the type's range, narrowed to [``lo``, ``hi``) where the value also
      feeds a DateTime or must not be negative (``what`` names that range in the reason);
      ``flag``: ``UInt8`` written as true/false;
    - ``Float64``: a finite number (a JSON integer too, when a float holds it);
      ``Nullable(Float64)``: that or null (``nan``: NaN too, stored as NaN);
    - ``String``: a non-empty string; ``choices``: one of them; ``ident``: an identifier
      (at most :data:`IDENT_MAX_CHARS` characters, no control characters);
      ``null_as``: null is stored as this string; ``Nullable(String)``: a string or null;
      every string must encode as UTF-8;
    - ``iso``: ISO-8601 text (Flink's ``TIMESTAMP_LTZ``) stored as Int64 epoch ms, in
      [``lo``, ``hi``) ms (``epoch_ok``: an integer epoch ms is accepted too).

    :meth:`check` returns the value as stored (ints as int, numbers as float), or raises
    the writer's :class:`InvalidMessage` with the reason.
    """

    ch_type: str
    lo: int | None = None
    hi: int | None = None
    what: str = ""
    flag: bool = False
    nan: bool = False
    choices: tuple[str, ...] = ()
    ident: bool = False
    null_as: str | None = None
    iso: bool = False
    epoch_ok: bool = False

    # derived once (check() runs for every field of every message)
    base: str = field(init=False, repr=False, compare=False)
    nullable: bool = field(init=False, repr=False, compare=False)
    bounds: tuple[int, int] = field(init=False, repr=False, compare=False)
    _kind: str = field(init=False, repr=False, compare=False)
    _empty_ok: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        m = re.fullmatch(r"Nullable\((.*)\)", self.ch_type)
        base = m.group(1) if m else self.ch_type
        lo, hi = INT_RANGES.get(base, (-(2**63), 2**63))
        bounds = (lo if self.lo is None else max(lo, self.lo), hi if self.hi is None else self.hi)
        if self.iso:
            kind = "iso"
        elif self.flag:
            kind = "flag"
        elif base in INT_RANGES:
            kind = "int"
        elif base.startswith("Float"):
            kind = "float"
        elif base == "String":
            kind = "choice" if self.choices else "str"
        else:
            raise ValueError(f"no check for column type {self.ch_type!r}")
        for k, v in (
            ("base", base),
            ("nullable", m is not None),
            ("bounds", bounds),
            ("_kind", kind),
            ("_empty_ok", m is not None or self.null_as is not None),
        ):
            object.__setattr__(self, k, v)  # fmt: skip

    @property
    def range_text(self) -> str:
        lo, hi = self.bounds
        if self.iso or self.what.startswith("epoch ms"):
            return f"{self.what} ({ms_text(lo)} .. {ms_text(hi - 1)})"
        return f"{self.what or self.base} [{_bound(lo)}, {_bound(hi)})"

    def check(self, name: str, v: Any, error: type[InvalidMessage] = InvalidMessage) -> Any:
        kind = self._kind
        if v is None:
            if self.nullable:
                return None
            if self.null_as is not None:
                return self.null_as
        if kind == "float":
            if type(v) is float and math.isfinite(v):  # the common case
                return v
            return self._float(name, v, error)
        if kind == "int":
            if type(v) is float and v.is_integer():
                v = int(v)
            if type(v) is not int:
                raise error(f"{name}: expected an integer")
            lo, hi = self.bounds
            if not lo <= v < hi:
                raise error(f"{name}: out of range for {self.range_text}")
            return v
        if kind == "str":
            if type(v) is not str:
                if self._empty_ok:
                    raise error(f"{name}: expected a string or null")
                raise error(f"{name}: expected a non-empty string")
            if not v and not self._empty_ok:
                raise error(f"{name}: expected a non-empty string")
            if not _storable_text(v):
                raise error(f"{name}: not valid Unicode (a lone surrogate)")
            if self.ident:
                if len(v) > IDENT_MAX_CHARS:
                    raise error(f"{name}: longer than {IDENT_MAX_CHARS} characters")
                if _CONTROL.search(v):
                    raise error(f"{name}: control characters are not allowed")
            return v
        if kind == "iso":
            return self._iso(name, v, error)
        if kind == "flag":
            if type(v) is not bool:
                raise error(f"{name}: expected true/false")
            return v
        # choice
        if type(v) is not str or v not in self.choices:
            raise error(f"{name}: expected one of {', '.join(self.choices)}, got {_show(v)}")
        return v

    def _float(self, name: str, v: Any, error: type[InvalidMessage]) -> float:
        expected = "a number or null" if self.nan else "a finite number"
        if self.nullable and not self.nan:
            expected += " or null"
        if not isinstance(v, int | float) or isinstance(v, bool):
            raise error(f"{name}: expected {expected}")
        try:
            f = float(v)
        except OverflowError:  # a JSON integer of more than ~308 digits
            raise error(f"{name}: expected {expected}") from None
        if not math.isfinite(f) and not (self.nan and math.isnan(f)):
            raise error(f"{name}: expected {expected}")
        return f

    def _iso(self, name: str, v: Any, error: type[InvalidMessage]) -> Any:
        if self.epoch_ok and isinstance(v, int) and not isinstance(v, bool):
            ms = v
        elif isinstance(v, str):
            if not _ISO.fullmatch(v):
                raise error(f"{name}: not an ISO-8601 timestamp (expected {_ISO_FORMAT})")
            try:
                ms = iso_to_ms(v)
            except (ValueError, OverflowError) as e:
                raise error(f"{name}: not an ISO-8601 timestamp ({e})") from None
        else:
            raise error(f"{name}: not an ISO-8601 timestamp (not a string)")
        lo, hi = self.bounds
        if not lo <= ms < hi:
            raise error(f"{name}: out of range for {self.range_text}")
        return v  # as given: the writers' *_row functions convert it to ms


# the column kinds the writers' tables use
EPOCH_MS = Column("Int64", lo=DATETIME_MS[0], hi=DATETIME_MS[1], what="epoch ms of a DateTime")
# a bar's end: the partition is toDateTime(intDiv(bar_end_ms - 1, 1000)) (migration 005)
BAR_END_MS = Column(
    "Int64", lo=DATETIME_MS[0] + 1, hi=DATETIME_MS[1] + 1, what="epoch ms of a bar end"
)
ISO_MS = Column("Int64", lo=DATETIME_MS[0], hi=DATETIME_MS[1], what="a DateTime", iso=True)
COUNT = Column("Int64", lo=0)
INT64 = Column("Int64")
UINT32 = Column("UInt32")
FLOAT = Column("Float64")
FLOAT_OR_NULL = Column("Nullable(Float64)")
FLAG = Column("UInt8", flag=True)
IDENT = Column("String", ident=True)
TEXT_OR_NULL = Column("Nullable(String)")


def one_of(*choices: str) -> Column:
    return Column("String", choices=choices)


class _DuplicateField(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _DuplicateField(k)
            seen.add(k)
    return obj


def json_object(
    raw: bytes | None, *, error: type[InvalidMessage] = InvalidMessage
) -> dict[str, Any]:
    """The prologue of every writer's parse: a message -> its JSON object, else ``error``
    with the reason: empty, not JSON (incl. invalid UTF-8, nesting too deep for the
    parser, integers of more than 4,300 digits), a duplicate field (ambiguous: parsers
    disagree on which value wins), not an object."""
    if not raw:
        raise error("empty message")
    try:
        obj = json.loads(raw, object_pairs_hook=_no_duplicates)
    except _DuplicateField as e:
        raise error(f"duplicate field: {_show(str(e.args[0]))}") from None
    except RecursionError:
        raise error("not JSON: nested too deeply") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError, int digits limit
        raise error(f"not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise error("not a JSON object")
    return obj


def check_fields(
    obj: Mapping[str, Any],
    columns: Mapping[str, Column],
    *,
    error: type[InvalidMessage] = InvalidMessage,
) -> dict[str, Any]:
    """The ``columns`` fields of a decoded message, in order, each as stored
    (:meth:`Column.check`); extra fields are dropped. A missing field or a value its column
    cannot hold raises ``error`` with the reason."""
    missing = [f for f in columns if f not in obj]
    if missing:
        raise error(f"missing fields: {', '.join(missing[:5])}")
    return {f: c.check(f, obj[f], error) for f, c in columns.items()}


DLQ_PAYLOAD_MAX_BYTES = 64 * 1024  # a DLQ record must fit the broker's message size limit


def dlq_record(
    reason: str, raw: bytes | None, topic: str, partition: int, offset: int, detected_by: str
) -> bytes:
    """Same shape as ``trades_dlq`` records (jobs/ingest/schema.py), with the source offset.

    ``payload`` is the message as text (invalid UTF-8 replaced by U+FFFD; then also
    ``payload_base64``, the exact bytes). A message over :data:`DLQ_PAYLOAD_MAX_BYTES` is cut
    there (``payload_truncated``, ``payload_bytes``): the record must fit the broker's size
    limit; the whole message stays at its source offset."""
    data = raw or b""
    cut = data[:DLQ_PAYLOAD_MAX_BYTES]
    rec: dict[str, Any] = {
        "reason": reason[:2_000],
        "payload": cut.decode("utf-8", errors="replace"),
        "source_topic": topic,
        "source_partition": partition,
        "source_offset": offset,
        "detected_by": detected_by,
        "detected_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
    }
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        rec["payload_base64"] = base64.b64encode(cut).decode()
    if len(data) > len(cut):
        rec["payload_truncated"] = True
        rec["payload_bytes"] = len(data)
    return json.dumps(rec).encode()


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
        # (252 is also "too many partitions for single INSERT block": the batch's data)
        if isinstance(exc, ch_errors.ServerException) and exc.code in (159, 209, 210, 241, 252):
            return not _too_many_partitions(exc)
    except ImportError:  # pragma: no cover
        pass
    return isinstance(exc, OSError)


# ClickHouse error codes an INSERT gets for the values it carries (ErrorCodes.cpp):
# CANNOT_PARSE_TEXT, CANNOT_PARSE_INPUT_ASSERTION_FAILED, CANNOT_PARSE_DATE/DATETIME,
# TYPE_MISMATCH (clickhouse-driver: a value its column type cannot hold),
# ARGUMENT_OUT_OF_BOUND, CANNOT_CONVERT_TYPE, CANNOT_PARSE_NUMBER, INCORRECT_DATA,
# TOO_LARGE_STRING_SIZE, ILLEGAL_DIVISION (a MATERIALIZED expression),
# VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE, CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN,
# DECIMAL_OVERFLOW, VIOLATED_CONSTRAINT; and 252 for too many partitions in one block
DATA_ERROR_CODES = frozenset({6, 27, 38, 41, 53, 69, 70, 72, 117, 131, 153, 321, 349, 407, 469})
_CODE = re.compile(r"\bCode: (\d+)\b")


def _too_many_partitions(exc: BaseException) -> bool:
    return "partitions for single INSERT" in str(exc)


def _clickhouse_code(exc: BaseException) -> int | None:
    """The ClickHouse error code of a clickhouse-driver error, or of a chDB error
    (``Code: N. DB::Exception: ...``)."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    if type(exc).__name__ == "ChdbError":
        m = _CODE.search(str(exc))
        return int(m.group(1)) if m else None
    return None


def is_data_error(exc: BaseException) -> bool:
    """Errors a store raises because of the rows it was given (so the batch's other rows
    can still be written): an overflow, a value a type cannot hold, invalid text, a pandas
    out-of-bounds timestamp, a ClickHouse type/parse/range/constraint error. Not transient
    errors (retried) and not the rest (bugs, a missing table: the writer stops)."""
    from infra.clickhouse import ClickHouseDataError, ClickHouseError

    if isinstance(exc, RowsRejected | ClickHouseDataError):
        return True
    if is_transient(exc):
        return False
    code = _clickhouse_code(exc)
    if code is not None:
        return code in DATA_ERROR_CODES or (code == 252 and _too_many_partitions(exc))
    if isinstance(exc, ClickHouseError):  # unreachable, migrations, unknown columns
        return False
    # ValueError includes pandas' OutOfBoundsDatetime, pyarrow's ArrowInvalid and
    # UnicodeError; struct.error: a value a packed column cannot hold
    if isinstance(exc, OverflowError | ValueError | struct.error):
        return True
    try:
        import pyarrow as pa

        return isinstance(exc, pa.ArrowTypeError | pa.ArrowInvalid)
    except ImportError:  # pragma: no cover
        return False


class RowsRejected(Exception):
    """A write step failed because of the rows it was given (:func:`is_data_error`)."""

    def __init__(self, step: str, exc: BaseException) -> None:
        super().__init__(f"{step}: {_short(exc)}")
        self.step = step
        self.reason = f"{step} rejected the message: {_short(exc, 300)}"


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


@dataclass(frozen=True)
class Source:
    """Where a row came from (to dead-letter it if a store rejects it)."""

    partition: int
    offset: int
    raw: bytes | None


@dataclass
class Batch:
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # topic -> rows
    # topic -> the rows' messages, aligned with ``rows`` (empty in hand-made batches)
    sources: dict[str, list[Source]] = field(default_factory=dict)
    dlq: list[tuple[str, str, bytes]] = field(default_factory=list)  # (reason, topic, record)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # last + 1
    first_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    messages: int = 0

    @property
    def n_rows(self) -> int:
        return sum(len(r) for r in self.rows.values())

    def items(self) -> list[tuple[str, int]]:
        """(topic, index) of every row, in topic order."""
        return [(t, i) for t, rows in self.rows.items() for i in range(len(rows))]

    def subset(self, items: Sequence[tuple[str, int]]) -> Batch:
        """A batch of just these rows (for :meth:`KafkaBatchWriter._write`)."""
        sub = Batch()
        for t, i in items:
            sub.rows.setdefault(t, []).append(self.rows[t][i])
            if t in self.sources:
                sub.sources.setdefault(t, []).append(self.sources[t][i])
        return sub


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

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        from confluent_kafka import OFFSET_BEGINNING

        self._assigned_at = time.monotonic()
        if self.config.from_beginning and not self._rewound:
            for p in partitions:
                p.offset = OFFSET_BEGINNING
            consumer.assign(partitions)
            self._rewound = True  # a later rebalance resumes from the commits
        else:
            try:
                committed = consumer.committed(partitions, timeout=10)
            except Exception as e:  # the broker is slow: use the commits as they are
                log.warning("could not read committed offsets on assignment: %s", e)
                committed = []
            fresh = False
            for p, c in zip(partitions, committed, strict=True):
                key = f"{p.topic}[{p.partition}]"
                known = self._positions.get(key, 0)
                # commits gone although we made some: the broker lost them (an operator's
                # deliberate reset commits an offset, so it still passes)
                if known > 0 and c.offset < 0:
                    self._fatal = BrokerReset(
                        f"{key}: this group had committed offset {known:,}, the broker now "
                        "has none: it lost data "
                        "(the local broker keeps topics in memory; a restart drops them). "
                        f"Not starting over silently; to accept the loss, delete "
                        f"{self._positions_file} or use another group id"
                    )
                if c.offset < 0:  # no commit yet: from the beginning
                    p.offset = OFFSET_BEGINNING
                    fresh = True
            if fresh:
                consumer.assign(partitions)
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

    def _offset_out_of_range(self, topic: str, partition: int, error: str) -> None:
        """No valid position (``auto.offset.reset`` is ``error``): a partition this group
        never committed starts at the beginning; one it did is a :class:`BrokerReset`."""
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        key = f"{topic}[{partition}]"
        if not self._positions.get(key):  # a new group: from the beginning
            self._consumer.seek(TopicPartition(topic, partition, OFFSET_BEGINNING))
            return
        self._fatal = BrokerReset(
            f"{key}: {error}: the position is beyond the end of the log, so the broker lost "
            "messages (the local broker keeps topics in memory; a restart drops them)"
        )

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

    def _commit(self, batch: Batch) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(batch.next_offsets.items())]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
            for (t, p), o in batch.next_offsets.items():
                self.stats.committed.setdefault(t, {})[p] = o
                self._positions[f"{t}[{p}]"] = o
            self._save_positions()
        except KafkaException as e:
            # e.g. the group rebalanced during a long retry: the batch is written, a new
            # owner re-reads it from the last commit and re-writes it (idempotent)
            self.stats.commits_failed += 1
            log.warning("commit of %s failed (%s); the rows will be re-delivered", offsets, e)

    def _load_positions(self) -> dict[str, int]:
        try:
            data = json.loads(self._positions_file.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _save_positions(self) -> None:
        path = self._positions_file
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._positions, sort_keys=True))
            tmp.replace(path)
        except OSError as e:  # the positions are a safety net, not the commit itself
            log.warning("could not record positions in %s: %s", path, e)

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

    def _retrying(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn``; retry transient errors with backoff (logged); a data error
        (:func:`is_data_error`) becomes :class:`RowsRejected` naming ``what``; re-raise
        the rest."""
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
        try:
            out = retrying(fn)
        except Exception as e:
            if not isinstance(e, RowsRejected) and is_data_error(e):
                raise RowsRejected(what, e) from e
            raise
        self._add_time(what, t0)
        if first_failure:
            log.warning(
                "%s recovered: written after %.1f s of failures",
                what,
                time.monotonic() - first_failure[0],
            )
        return out

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


def _short(exc: BaseException | None, limit: int = 200) -> str:
    if exc is None:
        return "?"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:limit]}"
