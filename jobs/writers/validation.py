"""How a message is checked, field by field, before it becomes a row.

:class:`InvalidMessage` is the error a writer's parse raises (its ``reason`` goes into the
dead-letter record); :class:`Column` is what one field must be for its target column to
hold it (the ClickHouse type, the DateTime span of epoch-ms fields, finiteness, valid
strings), with the column kinds the writers' tables use (:data:`EPOCH_MS`, :data:`ISO_MS`,
:data:`COUNT`, :data:`FLOAT`, :data:`FLAG`, :data:`IDENT`, :func:`one_of`, ...);
:func:`json_object` decodes a message into its JSON object and :func:`check_fields` checks
its fields against their columns.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from infra.clickhouse import iso_to_ms


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
    sql/clickhouse/*.sql (tests/unit/jobs/writers/test_writer_columns.py checks every
    writer's columns against the migrated tables); the check follows from it:

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
