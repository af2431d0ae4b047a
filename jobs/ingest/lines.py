"""Low-level reading of a trades text file for ``ingest replay``: physical lines from a
plain or gzip file (:func:`raw_lines`, keeping the tail read before a truncated or corrupt
gzip stream and raising :class:`Truncated` with it), UTF-8 decoding that keeps undecodable
bytes as surrogate escapes (shown as ``\\xNN``), CSV records with their first line number
and text (:func:`csv_records`, telling a malformed record, an unterminated quoted field and
a truncated tail apart), the one-JSON-object-per-line parser that keeps numbers as their
text (:func:`parse_json_object`), and the reader's dead-letter reason texts. The formats
built on these are in :mod:`jobs.ingest.files`; the user-level contract is in
:mod:`jobs.ingest.replay`.
"""

from __future__ import annotations

import csv
import gzip
import json
import logging
import re
import zlib
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

NOT_UTF8 = "not valid UTF-8"
NOT_OBJECT = "not a JSON object"
WRONG_FIELDS = "wrong number of fields"
MALFORMED_CSV = "malformed CSV row"
UNTERMINATED = "unterminated quoted field"
TRUNCATED = "file truncated or corrupt"


class Truncated(Exception):
    """Reading stopped part-way: ``fragment`` is the undelimited tail read before ``error``."""

    def __init__(self, fragment: bytes, error: BaseException):
        super().__init__(repr(error))
        self.fragment = fragment
        self.error = error


READ_ERRORS = (OSError, EOFError, zlib.error)  # gzip.BadGzipFile is an OSError


def raw_lines(path: Path) -> Generator[bytes]:
    """Physical lines with their ``\\n``; reading that fails part-way raises :class:`Truncated`
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
    except READ_ERRORS as e:
        raise Truncated(buf, e) from e
    if buf:
        yield buf


SURROGATE = re.compile("[\udc80-\udcff]")


def decode(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def shown(text: str) -> str:
    """Text with undecodable bytes (surrogate escapes) shown as ``\\xNN``."""
    if not SURROGATE.search(text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def strip_eol(text: str) -> str:
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith(("\n", "\r")) else text


class _LineFeed:
    """Numbered, decoded lines for ``csv.reader``, remembering those of the current record."""

    def __init__(self, path: Path):
        self._raw = raw_lines(path)
        self.lineno = 0
        self.pending: list[str] = []
        self.start = 1
        self.truncated: Truncated | None = None
        self.eof_in_record = False  # the file ended while the csv reader was inside a record

    def __iter__(self) -> _LineFeed:
        return self

    def __next__(self) -> str:
        try:
            b = next(self._raw)
        except Truncated as t:
            self.truncated = t
            self.eof_in_record = bool(self.pending)
            raise StopIteration from None
        except StopIteration:
            self.eof_in_record = bool(self.pending)
            raise
        self.lineno += 1
        s = decode(b)
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


def csv_records(path: Path) -> Generator[tuple[int, str, list[str] | None, str | None]]:
    """(line, text, fields, reason): every record incl. blank ones; ``fields`` is None when
    the record could not be parsed, ``reason`` says why. Raises :class:`Truncated` at the
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
                text += decode(feed.truncated.fragment)
                reason, tail_reported = TRUNCATED, True
            else:
                reason = UNTERMINATED
            feed.eof_in_record = False
        yield line, strip_eol(text), rec, reason
    t = feed.truncated
    if t is not None:
        if not tail_reported:
            yield feed.lineno + 1, strip_eol(decode(t.fragment)), None, TRUNCATED
        raise Truncated(t.fragment, t.error)


class _NotJson(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not JSON")


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The line's JSON object with every number as its text (``parse_int``/``parse_float``
    = str); None when the line is not one JSON object (NaN/Infinity literals are not JSON,
    as for the job's parser)."""
    try:
        obj = json.loads(text, parse_int=str, parse_float=str, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None
    return obj if isinstance(obj, dict) else None
