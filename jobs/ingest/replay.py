"""Replay recorded trades from files into the ``trades`` topic.

``candleflow ingest replay FILE`` streams a file row by row through :func:`replay`:

* **CSV** (``.csv``, ``.csv.gz``; header row with the wire columns ``ts_ms, symbol, price,
  qty, side, trade_id`` in any order and optionally ``exchange``; extra columns are ignored;
  BOM, CRLF and quoted fields with commas/line breaks are fine) and **JSONL** (``.jsonl``,
  ``.jsonl.gz``; one JSON object per line) are read as *text*: every field reaches
  :func:`jobs.ingest.schema.validate` as the exact characters in the file (JSON numbers are
  parsed with ``parse_int=str``/``parse_float=str``), so ``354.11000000`` is sent as
  ``"354.11000000"``, and ``1721347022707.5``, ``1e12`` or a 40-digit number in an integer
  field is rejected by the validator, never truncated, rounded or overflowed. An empty CSV
  cell and a JSON ``null`` are missing; a JSON object/array value is handed on as such (the
  validator says ``<field> is not a scalar``). A JSONL line that is not exactly one JSON
  object is ``not a JSON object`` - including ``NaN``/``Infinity`` literals (not JSON, as
  for the job's parser) and a line holding two objects (stricter than the job's parser,
  which reads the first: in a file that means two records ran together). Without an
  ``exchange`` column (CSV) or key (JSONL) the exchange is ``binance``.
* **Parquet** (the layout of ``binance_trades_sample.parquet``) and **freqtrade**
  ``*-trades.json(.gz)`` (rows ``[ts_ms, id, order, side, price, amount, cost]``, the
  symbol from the file name, e.g. ``..._XRP_ETH-trades`` -> ``XRPETH``) have typed columns:
  a float price/qty becomes its exact shortest decimal text (``format_decimal``), an
  integral float in ``ts_ms``/``trade_id`` its integer, and a non-integral one its decimal
  text, which the validator rejects (never truncated); a null is missing.

Every row is validated; a bad one is dead-lettered on ``trades_dlq`` with the same record
shape as the Flink job's (``schema.dlq_record``) and these values:

========================  =====================================================
``reason``                the validator's reason, or one of the reader's below
``payload``               the row as read: the CSV record / JSONL line without its line
                          break (non-UTF-8 bytes as ``\\xNN``); parquet/freqtrade rows as
                          JSON of their typed values
``source_topic``          ``file:<file name>``
``source_partition``      null
``source_offset``         1-based line number where the row starts (the CSV header is
                          line 1; blank lines count); 1-based row number for parquet and
                          freqtrade files
``detected_by``           ``ingest-replay``
========================  =====================================================

Reader reasons: ``not valid UTF-8``, ``not a JSON object`` (not JSON, or JSON that is not an
object), ``wrong number of fields`` (CSV record vs header; freqtrade row shorter than 6),
``malformed CSV row`` (the csv module refused it), ``unterminated quoted field`` (the file
ends inside a CSV quote), ``file truncated or corrupt`` (the file could not be read past
this point, e.g. a truncated gzip: the partial tail is the payload, and it counts as one
row). Blank lines are skipped and counted, not dead-lettered.

A file that cannot be replayed at all (unsupported name, unreadable or not gzip, a CSV
header without the required columns or with duplicate ones, freqtrade JSON that does not
parse) raises :class:`FileError` before anything is sent: the CLI exits 2. Exit codes
otherwise: 0 = every row read was sent or dead-lettered and acknowledged, 1 = the broker
failed (the summary says how many were not delivered), 130 = interrupted (Ctrl-C).

``load_trades``/``to_messages``/``repeated_messages`` are the DataFrame helpers that tests
and benchmarks use on the clean sample files.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import math
import re
import time
import zlib
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from infra.settings import Settings
from jobs.ingest.schema import InvalidTrade, Trade, dlq_record, format_decimal, validate

log = logging.getLogger(__name__)

REQUIRED = ("ts_ms", "symbol", "price", "qty", "side", "trade_id")
FIELDS = (*REQUIRED, "exchange")
INT_FIELDS = ("ts_ms", "trade_id")
DEFAULT_EXCHANGE = "binance"
DETECTED_BY = "ingest-replay"

NOT_UTF8 = "not valid UTF-8"
NOT_OBJECT = "not a JSON object"
WRONG_FIELDS = "wrong number of fields"
MALFORMED_CSV = "malformed CSV row"
UNTERMINATED = "unterminated quoted field"
TRUNCATED = "file truncated or corrupt"


def load_trades(path: Path) -> pd.DataFrame:
    """Load a trades file into columns ts_ms, symbol, price, qty, side, trade_id, exchange.

    Supported: the parquet layout of ``binance_trades_sample.parquet``, freqtrade's
    ``*-trades.json(.gz)`` (rows ``[ts_ms, id, order, side, price, amount, cost]``; the
    symbol comes from the file name, e.g. ``..._XRP_ETH-trades`` -> ``XRPETH``), and CSV/JSONL
    with the wire columns.
    """
    name = path.name
    if name.endswith(".parquet"):
        df = pd.read_parquet(path)
    elif name.endswith((".json.gz", ".json")) and "trades" in name:
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt") as f:
            rows = json.load(f)
        df = pd.DataFrame(
            rows, columns=["ts_ms", "trade_id", "order", "side", "price", "qty", "cost"]
        )
        base, quote = name.split("-trades")[0].split("_")[-2:]  # ..._XRP_ETH-trades
        df["symbol"] = (base + quote).upper()
    elif name.endswith((".jsonl", ".jsonl.gz")):
        df = pd.read_json(path, lines=True, dtype=False)
    elif name.endswith((".csv", ".csv.gz")):
        df = pd.read_csv(path)
    else:
        raise ValueError(f"unsupported trades file: {path}")
    if "exchange" not in df:
        df["exchange"] = "binance"
    missing = {"ts_ms", "symbol", "price", "qty", "side", "trade_id"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    return df[["ts_ms", "symbol", "price", "qty", "side", "trade_id", "exchange"]]


def _int_or_text(v: Any) -> Any:
    """An integer column's value: an int when it is integral, else its text (never truncated)."""
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int | np.integer):
        return int(v)
    if isinstance(v, float | np.floating):
        f = float(v)
        if math.isnan(f):
            return None
        return int(f) if f.is_integer() else format_decimal(f)
    return v


def to_messages(df: pd.DataFrame) -> Iterator[dict[str, Any]]:
    """Rows as wire messages; float prices become exact shortest decimal strings; integer
    columns stay ints when integral and become text otherwise (so validation rejects them)."""
    for ts, sym, price, qty, side, tid, exch in df.itertuples(index=False, name=None):
        yield {
            "ts_ms": _int_or_text(ts),
            "symbol": sym,
            "price": format_decimal(price) if isinstance(price, float) else price,
            "qty": format_decimal(qty) if isinstance(qty, float) else qty,
            "side": side,
            "trade_id": _int_or_text(tid),
            "exchange": exch,
        }


@dataclass
class Pacer:
    """Sleeps so messages go out at ``speed`` x real time; ``speed=None`` = as fast as possible.
    Gaps in event time longer than ``max_gap_ms`` are shortened to it (captures months apart)."""

    speed: float | None
    max_gap_ms: int = 60_000
    _t0: float = field(default=0.0, init=False)
    _virtual_ms: float = field(default=0.0, init=False)
    _last_ts: int | None = field(default=None, init=False)

    def wait(self, ts_ms: int) -> None:
        if self.speed is None:
            return
        if self._last_ts is None:
            self._t0 = time.monotonic()
        else:
            self._virtual_ms += min(max(ts_ms - self._last_ts, 0), self.max_gap_ms)
        self._last_ts = ts_ms
        delay = self._t0 + self._virtual_ms / 1000.0 / self.speed - time.monotonic()
        if delay > 0:
            time.sleep(delay)


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


def repeated_messages(df: pd.DataFrame, repeat: int = 1) -> Iterator[dict[str, Any]]:
    """The file's messages ``repeat`` times, passes in event-time order and never overlapping:
    pass k is shifted by (k - repeat + 1) x (span rounded up to whole hours + 1 h), so the
    last pass keeps the file's own times and earlier passes lie before it (forward shifts
    would put historical data in the future, which validation rejects); trade ids of pass k
    are shifted forward by k x (max id + 1). Integer fields that are not integers are passed
    on unshifted (validation rejects them)."""
    if df.empty:
        return
    hour = 3_600_000
    ts = pd.to_numeric(df["ts_ms"], errors="coerce")
    ids = pd.to_numeric(df["trade_id"], errors="coerce")
    span = int(ts.max() - ts.min()) if ts.notna().any() else 0
    shift_ms = (span // hour + 2) * hour
    id_shift = int(ids.max()) + 1 if ids.notna().any() else 0
    for k in range(repeat):
        back = repeat - 1 - k
        for m in to_messages(df):
            if back and type(m["ts_ms"]) is int:
                m["ts_ms"] -= back * shift_ms
            if k and type(m["trade_id"]) is int:
                m["trade_id"] += k * id_shift
            yield m


# ------------------------------------------------------------------------- file reading
class FileError(ValueError):
    """The file cannot be replayed at all (a usage error): nothing was sent."""


@dataclass(frozen=True, slots=True)
class FileRow:
    """One row of a trades file: where it starts, its text, and its fields as text."""

    line: int  # 1-based line (CSV/JSONL) or row (parquet/freqtrade) number
    text: str  # the row as read: the DLQ payload
    fields: dict[str, Any] | None  # field -> text (None = missing); None if not parsed
    reason: str | None = None  # why the row could not be parsed (then fields is None)


class _Truncated(Exception):
    def __init__(self, fragment: bytes, error: BaseException):
        super().__init__(repr(error))
        self.fragment = fragment
        self.error = error


_READ_ERRORS = (OSError, EOFError, zlib.error)  # gzip.BadGzipFile is an OSError


def _raw_lines(path: Path) -> Generator[bytes]:
    """Physical lines with their ``\\n``; reading that fails part-way raises :class:`_Truncated`
    carrying the undelimited tail that was read before the failure."""
    opener: Callable[..., Any] = gzip.open if path.name.endswith(".gz") else open
    buf = b""
    try:
        with opener(path, "rb") as f:
            while chunk := f.read1(1 << 16):  # read1: keep what came before an error
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    yield line + b"\n"
    except _READ_ERRORS as e:
        raise _Truncated(buf, e) from e
    if buf:
        yield buf


_SURROGATE = re.compile("[\udc80-\udcff]")


def _decode(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def _shown(text: str) -> str:
    """Text with undecodable bytes (surrogate escapes) shown as ``\\xNN``."""
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _strip_eol(text: str) -> str:
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith(("\n", "\r")) else text


class _LineFeed:
    """Numbered, decoded lines for ``csv.reader``, remembering those of the current record."""

    def __init__(self, path: Path):
        self._raw = _raw_lines(path)
        self.lineno = 0
        self.pending: list[str] = []
        self.start = 1
        self.truncated: _Truncated | None = None
        self.eof_in_record = False  # the file ended while the csv reader was inside a record

    def __iter__(self) -> _LineFeed:
        return self

    def __next__(self) -> str:
        try:
            b = next(self._raw)
        except _Truncated as t:
            self.truncated = t
            self.eof_in_record = bool(self.pending)
            raise StopIteration from None
        except StopIteration:
            self.eof_in_record = bool(self.pending)
            raise
        self.lineno += 1
        s = _decode(b)
        if self.lineno == 1:
            s = s.removeprefix("\ufeff")
        if not self.pending:
            self.start = self.lineno
        self.pending.append(s)
        return s

    def take(self) -> tuple[int, str]:
        """(first line number, text) of the lines consumed since the last take."""
        text, self.pending = "".join(self.pending), []
        return self.start, text


def _csv_records(path: Path) -> Generator[tuple[int, str, list[str] | None, str | None]]:
    """(line, text, fields, reason): every record incl. blank ones; ``fields`` is None when
    the record could not be parsed, ``reason`` says why. Raises :class:`_Truncated` at the
    end when the file could not be read to its end (after yielding its tail as a record)."""
    feed = _LineFeed(path)
    reader = csv.reader(feed, strict=False)
    tail_reported = False
    while True:
        try:
            rec: list[str] | None = next(reader)
            reason = None
        except StopIteration:
            break
        except csv.Error as e:
            rec, reason = None, MALFORMED_CSV
            log.debug("malformed CSV record at line %d: %s", feed.start, e)
        line, text = feed.take()
        if feed.eof_in_record:  # the record was cut by the end of the file
            rec = None
            if feed.truncated is not None:
                text += _decode(feed.truncated.fragment)
                reason, tail_reported = TRUNCATED, True
            else:
                reason = UNTERMINATED
            feed.eof_in_record = False
        yield line, _strip_eol(text), rec, reason
    t = feed.truncated
    if t is not None:
        if not tail_reported:
            yield feed.lineno + 1, _strip_eol(_decode(t.fragment)), None, TRUNCATED
        raise _Truncated(t.fragment, t.error)


class _NotJson(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not JSON")


def _parse_json_object(text: str) -> dict[str, Any] | None:
    """The line's JSON object with every number as its text (``parse_int``/``parse_float``
    = str); None when the line is not one JSON object (NaN/Infinity literals are not JSON,
    as for the job's parser)."""
    try:
        obj = json.loads(text, parse_int=str, parse_float=str, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None


def _typed_text(name: str, v: Any) -> str | None:
    """A typed (parquet/freqtrade) value as field text: floats in their exact shortest
    decimal text, integral floats in integer fields as integers; never truncated."""
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if name in INT_FIELDS and v.is_integer():
            return str(int(v))
        return format_decimal(v)  # 'nan' / 'inf' / '1.5': the validator rejects them
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, bytes):
        return v.decode("utf-8", "backslashreplace")
    return str(v)


def _json_default(v: Any) -> Any:
    return format(v, "f") if isinstance(v, Decimal) else str(v)


class TradeFile:
    """A trades file opened for replay. :meth:`open` detects the format and checks what can
    make the whole file unusable (raising :class:`FileError`); :meth:`rows` reads it from
    the start each time it is called and never raises on a bad row."""

    def __init__(self, path: Path, kind: str):
        self.path = path
        self.kind = kind
        self.source = f"file:{path.name}"
        self.unit = "line" if kind in ("csv", "jsonl") else "row"  # what FileRow.line counts
        self.total: int | None = None  # rows, when known up front
        self.blank_lines = 0  # in the last pass
        self.read_error: str | None = None  # why the last pass stopped early
        self._header: list[str] = []
        self._freqtrade: list[Any] = []
        self._symbol = ""

    @classmethod
    def open(cls, path: Path) -> TradeFile:
        name = path.name
        if name.endswith((".csv", ".csv.gz")):
            f = cls(path, "csv")
            f._read_header()
        elif name.endswith((".jsonl", ".jsonl.gz")):
            f = cls(path, "jsonl")
            f._probe()
        elif name.endswith(".parquet"):
            f = cls(path, "parquet")
            f._open_parquet()
        elif name.endswith((".json", ".json.gz")) and "trades" in name:
            f = cls(path, "freqtrade")
            f._load_freqtrade()
        else:
            raise FileError(
                f"unsupported trades file {name!r}: expected .csv/.jsonl (optionally .gz), "
                ".parquet or freqtrade *-trades.json(.gz)"
            )
        return f

    # -- opening
    def _probe(self) -> None:
        """Fail now if not even the first bytes can be read (not gzip, unreadable)."""
        lines = _raw_lines(self.path)
        try:
            next(lines, None)
        except _Truncated as t:
            if not t.fragment:
                raise FileError(f"cannot read {self.path.name}: {t.error}") from t.error
        finally:
            lines.close()

    def _read_header(self) -> None:
        records = _csv_records(self.path)
        try:
            for line, text, rec, reason in records:
                if rec is None or reason is not None:
                    raise FileError(f"{self.path.name}: cannot read the CSV header (line {line})")
                if not text.strip():
                    continue
                if _SURROGATE.search(text):
                    raise FileError(f"{self.path.name}: the CSV header is not valid UTF-8")
                header = [h.strip() for h in rec]
                break
            else:
                return  # empty file: no rows
        except _Truncated as t:
            raise FileError(f"cannot read {self.path.name}: {t.error}") from t.error
        finally:
            records.close()
        missing = [c for c in REQUIRED if c not in header]
        dup = sorted({h for h in header if h in FIELDS and header.count(h) > 1})
        if missing or dup:
            what = f"lacks required columns {missing}" if missing else f"repeats columns {dup}"
            raise FileError(
                f"{self.path.name}: the CSV header (line {line}) {what}; it has {header}, "
                f"required are {list(REQUIRED)} (+ optional 'exchange')"
            )
        self._header = header

    def _open_parquet(self) -> None:
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(self.path)
        except Exception as e:  # pyarrow's errors for a non-parquet / damaged footer
            raise FileError(f"cannot read {self.path.name} as parquet: {e}") from e
        names = pf.schema_arrow.names
        missing = [c for c in REQUIRED if c not in names]
        if missing:
            raise FileError(f"{self.path.name}: lacks required columns {missing}; has {names}")
        self.total = pf.metadata.num_rows

    def _load_freqtrade(self) -> None:
        name = self.path.name
        parts = name.split("-trades")[0].split("_")
        if len(parts) < 2 or not parts[-2] or not parts[-1]:
            raise FileError(f"{name}: cannot tell the symbol (expected ..._BASE_QUOTE-trades)")
        self._symbol = (parts[-2] + parts[-1]).upper()
        opener: Callable[..., Any] = gzip.open if name.endswith(".gz") else open
        try:
            with opener(self.path, "rb") as f:
                rows = json.loads(f.read())
        except (*_READ_ERRORS, ValueError, RecursionError) as e:
            raise FileError(f"cannot read {name} as freqtrade trades JSON: {e}") from e
        if not isinstance(rows, list):
            raise FileError(f"{name}: freqtrade trades JSON must be an array of rows")
        self._freqtrade = rows
        self.total = len(rows)

    # -- reading
    def rows(self, limit: int = 0) -> Generator[FileRow]:
        """Every row (``limit`` > 0: the first ``limit`` rows), blank lines skipped."""
        self.blank_lines = 0
        self.read_error = None
        rows = {
            "csv": self._csv_rows,
            "jsonl": self._jsonl_rows,
            "parquet": self._parquet_rows,
            "freqtrade": self._freqtrade_rows,
        }[self.kind]()
        n = 0
        try:
            for row in rows:
                yield row
                n += 1
                if limit and n >= limit:
                    return
        finally:
            rows.close()

    def _stopped(self, line: int, error: BaseException) -> None:
        self.read_error = f"stopped reading at line/row {line:,}: {error!r}"
        log.warning("%s: %s", self.path.name, self.read_error)

    def _csv_rows(self) -> Generator[FileRow]:
        header = self._header
        if not header:
            return  # empty file
        with_exchange = "exchange" in header
        index = {c: header.index(c) for c in FIELDS if c in header}
        records = _csv_records(self.path)
        seen_header = False
        line = 0
        try:
            for line, text, rec, reason in records:
                if rec is not None and not text.strip():
                    self.blank_lines += 1
                    continue
                if not seen_header:
                    seen_header = True  # the first non-blank record (checked in open)
                    continue
                if rec is None:
                    yield FileRow(line, _shown(text), None, reason or MALFORMED_CSV)
                elif _SURROGATE.search(text):
                    yield FileRow(line, _shown(text), None, NOT_UTF8)
                elif len(rec) != len(header):
                    yield FileRow(line, text, None, WRONG_FIELDS)
                else:
                    fields = {c: (rec[i] if rec[i] != "" else None) for c, i in index.items()}
                    if not with_exchange:
                        fields["exchange"] = DEFAULT_EXCHANGE
                    yield FileRow(line, text, fields)
        except _Truncated as t:
            self._stopped(line, t.error)
        finally:
            records.close()

    def _jsonl_rows(self) -> Generator[FileRow]:
        lines = _raw_lines(self.path)
        try:
            yield from self._jsonl_lines(lines)
        finally:
            lines.close()

    def _jsonl_lines(self, lines: Iterator[bytes]) -> Generator[FileRow]:
        lineno = 0
        while True:
            try:
                b = next(lines)
            except StopIteration:
                return
            except _Truncated as t:
                yield FileRow(lineno + 1, _shown(_strip_eol(_decode(t.fragment))), None, TRUNCATED)
                self._stopped(lineno + 1, t.error)
                return
            lineno += 1
            text = _strip_eol(_decode(b))
            if lineno == 1:
                text = text.removeprefix("\ufeff")
            if not text.strip():
                self.blank_lines += 1
                continue
            if _SURROGATE.search(text):
                yield FileRow(lineno, _shown(text), None, NOT_UTF8)
                continue
            obj = _parse_json_object(text)
            if obj is None:
                yield FileRow(lineno, text, None, NOT_OBJECT)
                continue
            # values as parsed: texts, true/false, None; an object/array value goes on as
            # such, so the validator says "<field> is not a scalar"
            fields = {c: obj.get(c) for c in REQUIRED}
            fields["exchange"] = obj.get("exchange", DEFAULT_EXCHANGE)
            yield FileRow(lineno, text, fields)

    def _parquet_rows(self) -> Generator[FileRow]:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(self.path)
        cols = [c for c in FIELDS if c in pf.schema_arrow.names]
        n = 0
        try:
            for batch in pf.iter_batches(batch_size=8192, columns=cols):
                for values in batch.to_pylist():
                    n += 1
                    yield self._typed_row(n, values)
        except Exception as e:  # a damaged page / column chunk
            yield FileRow(n + 1, "", None, TRUNCATED)
            self._stopped(n + 1, e)

    def _freqtrade_rows(self) -> Generator[FileRow]:
        for n, r in enumerate(self._freqtrade, start=1):
            if not isinstance(r, list) or len(r) < 6:
                yield FileRow(n, json.dumps(r), None, WRONG_FIELDS)
                continue
            values = {
                "ts_ms": r[0],
                "trade_id": r[1],
                "side": r[3],
                "price": r[4],
                "qty": r[5],
                "symbol": self._symbol,
            }
            yield self._typed_row(n, values, json.dumps(r))

    def _typed_row(self, n: int, values: dict[str, Any], text: str | None = None) -> FileRow:
        fields = {c: _typed_text(c, values.get(c)) for c in REQUIRED}
        fields["exchange"] = (
            _typed_text("exchange", values["exchange"]) if "exchange" in values else "binance"
        )
        if text is None:
            text = json.dumps(values, default=_json_default)
        return FileRow(n, text, fields)


# ------------------------------------------------------------------------------ replay
@dataclass
class ReplayReport:
    """What a replay did; ``lines()`` is the printed summary, ``as_dict()`` the logged one."""

    file: str
    passes: int
    stats: IngestStats
    topic: str
    dlq_topic: str
    unit: str = "line"  # what first_line counts: "line" (CSV/JSONL) or "row"
    blank_lines: int = 0
    first_line: dict[str, int] = field(default_factory=dict)  # reason -> first line/row
    outcome: str = "complete"  # complete | interrupted | broker failed | error
    detail: str = ""
    read_errors: list[str] = field(default_factory=list)
    acked_trades: int = 0  # acknowledged by the broker
    acked_dead_letters: int = 0
    failed_deliveries: int = 0
    end_offsets: dict[int, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def not_delivered(self) -> int:
        return (
            self.stats.sent + self.stats.dead_lettered - self.acked_trades - self.acked_dead_letters
        )

    @property
    def exit_code(self) -> int:
        return {"complete": 0, "interrupted": 130}.get(self.outcome, 1)

    def lines(self) -> list[str]:
        st = self.stats
        rate = st.read / self.elapsed_s if self.elapsed_s > 0 else 0.0
        passes = f" in {self.passes} passes" if self.passes > 1 else ""
        out = [
            f"replay {self.file}: {self.outcome}" + (f" ({self.detail})" if self.detail else ""),
            f"  read {st.read:,} rows{passes} ({self.blank_lines:,} blank line(s) skipped) "
            f"in {self.elapsed_s:.1f} s, {rate:,.0f} rows/s",
            f"  sent {st.sent:,} -> {self.topic}, acknowledged {self.acked_trades:,} "
            f"(end offsets {self.end_offsets})",
            f"  dead-lettered {st.dead_lettered:,} -> {self.dlq_topic}, "
            f"acknowledged {self.acked_dead_letters:,}",
        ]
        for reason, n in sorted(st.reasons.items(), key=lambda kv: (-kv[1], kv[0])):
            first = self.first_line.get(reason)
            out.append(f"    {n:,} x {reason!r} (first at {self.unit} {first})")
        if unsent := st.read - st.sent - st.dead_lettered:
            out.append(f"  {unsent:,} row(s) read but not sent: {self.outcome}")
        out += [f"  {e}" for e in self.read_errors]
        if self.not_delivered or self.failed_deliveries:
            out.append(
                f"  NOT delivered: {self.not_delivered:,} "
                f"({self.failed_deliveries:,} failed deliveries)"
            )
        return out

    def as_dict(self) -> dict[str, Any]:
        st = self.stats
        return {
            "file": self.file,
            "outcome": self.outcome,
            "detail": self.detail,
            "passes": self.passes,
            "read": st.read,
            "sent": st.sent,
            "dead_lettered": st.dead_lettered,
            "reasons": dict(st.reasons),
            "first_line": dict(self.first_line),
            "blank_lines": self.blank_lines,
            "read_errors": list(self.read_errors),
            "acked_trades": self.acked_trades,
            "acked_dead_letters": self.acked_dead_letters,
            "not_delivered": self.not_delivered,
            "elapsed_s": round(self.elapsed_s, 3),
        }


@dataclass
class _Span:
    """Event-time span and largest trade id of the first pass (sets the --repeat shifts)."""

    lo: int | None = None
    hi: int | None = None
    max_id: int = -1

    def add(self, t: Trade) -> None:
        self.lo = t.ts_ms if self.lo is None else min(self.lo, t.ts_ms)
        self.hi = t.ts_ms if self.hi is None else max(self.hi, t.ts_ms)
        self.max_id = max(self.max_id, t.trade_id)

    def shifts(self, k: int) -> tuple[int, int]:
        hour = 3_600_000
        span = (self.hi - self.lo) if self.lo is not None and self.hi is not None else 0
        return k * (span // hour + 2) * hour, k * (self.max_id + 1)


def replay(
    source: TradeFile,
    sink: TradeSink,
    *,
    pacer: Pacer | None = None,
    limit: int = 0,
    repeat: int = 1,
    on_row: Callable[[], None] | None = None,
    flush_timeout_s: float | None = None,
) -> ReplayReport:
    """Send every row of ``source`` (``repeat`` passes; pass k shifted forward in time and
    trade id like :func:`repeated_messages`) through ``sink``; bad rows are dead-lettered
    with their reason and line. Never raises for a row, a broker failure or Ctrl-C: the
    returned report says what happened (``outcome``, ``exit_code``)."""
    report = ReplayReport(
        source.path.name, repeat, sink.stats, sink.topic, sink.dlq_topic, unit=source.unit
    )
    span = _Span()
    t0 = time.monotonic()

    def reject(reason: str, row: FileRow) -> None:
        report.first_line.setdefault(reason, row.line)
        sink.dead_letter(reason, row.text, source=source.source, offset=row.line)

    try:
        for k in range(repeat):
            shift_ms, id_shift = span.shifts(k) if k else (0, 0)
            for row in source.rows(limit):
                sink.stats.read += 1
                if row.fields is None:
                    reject(row.reason or NOT_OBJECT, row)
                else:
                    try:
                        trade = sink.check(row.fields)
                        if k:
                            trade = sink.check(
                                {
                                    **trade.to_json(),
                                    "ts_ms": trade.ts_ms + shift_ms,
                                    "trade_id": trade.trade_id + id_shift,
                                }
                            )
                    except InvalidTrade as e:
                        reject(e.reason, row)
                    else:
                        if not k:
                            span.add(trade)
                        if pacer is not None:
                            pacer.wait(trade.ts_ms)
                        sink.publish(trade)
                if on_row is not None:
                    on_row()
                if sink.failures:
                    raise BrokerError(sink.failures[0])
            report.blank_lines += source.blank_lines
            if source.read_error:
                report.read_errors.append(source.read_error)
    except KeyboardInterrupt:
        report.outcome, report.detail = "interrupted", "Ctrl-C"
    except BrokerError as e:
        report.outcome, report.detail = "broker failed", str(e)
    except Exception as e:  # a bug, not a row: still end with the counts
        log.exception("replay of %s failed", source.path.name)
        report.outcome, report.detail = "error", repr(e)
    finally:
        _finish(report, sink, flush_timeout_s)
        report.elapsed_s = time.monotonic() - t0
        log.info("replay summary: %s", json.dumps(report.as_dict()))
    return report


def _finish(report: ReplayReport, sink: TradeSink, timeout_s: float | None) -> None:
    try:
        sink.producer.flush(timeout=timeout_s)
    except KeyboardInterrupt:
        if report.outcome == "complete":
            report.outcome, report.detail = "interrupted", "Ctrl-C while flushing"
    except Exception as e:
        if report.outcome == "complete":
            report.outcome, report.detail = "broker failed", f"flush: {e!r}"
    report.acked_trades = sink.tracker.acked
    report.acked_dead_letters = sink.dlq_tracker.acked
    report.failed_deliveries = len(sink.failures)
    report.end_offsets = dict(sink.tracker.end)
    if report.outcome == "complete" and (report.failed_deliveries or report.not_delivered):
        first = sink.failures[0] if sink.failures else "not acknowledged"
        report.outcome, report.detail = "broker failed", first
