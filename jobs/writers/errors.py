"""How a writer classifies the errors of a store or the broker.

:func:`is_transient`: "not reachable now" (:class:`TransientError`, connection and timeout
errors, ClickHouse load errors), retried with backoff; :func:`is_data_error`: the store
rejected the rows it was given (an overflow, a type/parse/range/constraint error, the
ClickHouse codes of :data:`DATA_ERROR_CODES`), so the batch is bisected and the rejected
messages dead-lettered; :class:`RowsRejected` is a write step that failed that way.
Anything else is a bug and stops the writer.
"""

from __future__ import annotations

import re
import struct


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


def _short(exc: BaseException | None, limit: int = 200) -> str:
    if exc is None:
        return "?"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text[:limit]}"
