"""The trades files ``ingest replay`` reads: :class:`TradeFile` detects the format from the
name (CSV, JSONL, each optionally gzip; parquet; freqtrade ``*-trades.json(.gz)``), checks
up front what makes the whole file unusable (raising :class:`FileError`) and yields every
row as a :class:`FileRow` (line/row number, the text that becomes the DLQ payload, the
fields as text, or the reason the row could not be parsed), with typed parquet/freqtrade
values turned into exact text. Line decoding and the reader's reasons are in
:mod:`jobs.ingest.lines`; the user-level contract is in :mod:`jobs.ingest.replay`.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from jobs.ingest.lines import (
    MALFORMED_CSV,
    NOT_OBJECT,
    NOT_UTF8,
    READ_ERRORS,
    SURROGATE,
    TRUNCATED,
    WRONG_FIELDS,
    Truncated,
    csv_records,
    decode,
    parse_json_object,
    raw_lines,
    shown,
    strip_eol,
)
from jobs.ingest.schema import format_decimal

log = logging.getLogger(__name__)

REQUIRED = ("ts_ms", "symbol", "price", "qty", "side", "trade_id")
FIELDS = (*REQUIRED, "exchange")
INT_FIELDS = ("ts_ms", "trade_id")
DEFAULT_EXCHANGE = "binance"


class FileError(ValueError):
    """The file cannot be replayed at all (a usage error): nothing was sent."""


@dataclass(frozen=True, slots=True)
class FileRow:
    """One row of a trades file: where it starts, its text, and its fields as text."""

    line: int  # 1-based line (CSV/JSONL) or row (parquet/freqtrade) number
    text: str  # the row as read: the DLQ payload
    fields: dict[str, Any] | None  # field -> text (None = missing); None if not parsed
    reason: str | None = None  # why the row could not be parsed (then fields is None)


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
        lines = raw_lines(self.path)
        try:
            next(lines, None)
        except Truncated as t:
            if not t.fragment:
                raise FileError(f"cannot read {self.path.name}: {t.error}") from t.error
        finally:
            lines.close()

    def _read_header(self) -> None:
        records = csv_records(self.path)
        try:
            for line, text, rec, reason in records:
                if rec is None or reason is not None:
                    raise FileError(f"{self.path.name}: cannot read the CSV header (line {line})")
                if not text.strip():
                    continue
                if SURROGATE.search(text):
                    raise FileError(f"{self.path.name}: the CSV header is not valid UTF-8")
                header = [h.strip() for h in rec]
                break
            else:
                return  # empty file: no rows
        except Truncated as t:
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
        except (*READ_ERRORS, ValueError, RecursionError) as e:
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
        records = csv_records(self.path)
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
                    yield FileRow(line, shown(text), None, reason or MALFORMED_CSV)
                elif SURROGATE.search(text):
                    yield FileRow(line, shown(text), None, NOT_UTF8)
                elif len(rec) != len(header):
                    yield FileRow(line, text, None, WRONG_FIELDS)
                else:
                    fields = {c: (rec[i] if rec[i] != "" else None) for c, i in index.items()}
                    if not with_exchange:
                        fields["exchange"] = DEFAULT_EXCHANGE
                    yield FileRow(line, text, fields)
        except Truncated as t:
            self._stopped(line, t.error)
        finally:
            records.close()

    def _jsonl_rows(self) -> Generator[FileRow]:
        lines = raw_lines(self.path)
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
            except Truncated as t:
                yield FileRow(lineno + 1, shown(strip_eol(decode(t.fragment))), None, TRUNCATED)
                self._stopped(lineno + 1, t.error)
                return
            lineno += 1
            text = strip_eol(decode(b))
            if lineno == 1:
                text = text.removeprefix("\ufeff")
            if not text.strip():
                self.blank_lines += 1
                continue
            if SURROGATE.search(text):
                yield FileRow(lineno, shown(text), None, NOT_UTF8)
                continue
            obj = parse_json_object(text)
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
