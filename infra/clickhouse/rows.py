"""Rows: topic messages -> table rows, and Python values -> what a column type takes."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd

from udfs.topics import FEATURES as FEATURES_TOPIC

Row = Mapping[str, Any]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# the `features` table (sql/clickhouse/002_features.sql): the `features` topic model
# (udfs/topics.py): its fields up to trade_count, then one Nullable(Float64) column per
# udfs.indicators.FEATURE_NAMES, then the tail
_FIELDS = list(FEATURES_TOPIC)
FEATURES_BASE_COLUMNS = tuple(_FIELDS[: _FIELDS.index("trade_count") + 1])
FEATURES_TAIL_COLUMNS = tuple(_FIELDS[_FIELDS.index("features_ready") :])


def features_columns() -> list[str]:
    """The `features` topic's fields in order = the `features` table's (non-materialized)
    columns."""
    from udfs.indicators import FEATURE_NAMES

    return [*FEATURES_BASE_COLUMNS, *FEATURE_NAMES, *FEATURES_TAIL_COLUMNS]


# --------------------------------------------------------------- topic rows -> table rows
def iso_to_ms(value: str | int) -> int:
    """Flink's ISO-8601 ``TIMESTAMP_LTZ(3)`` text (``2021-01-01T00:00:59.999Z``) -> epoch ms
    (text without an offset is UTC)."""
    if isinstance(value, int):
        return value
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def topic_row(message: Mapping[str, Any], ms_fields: Sequence[str]) -> dict[str, Any]:
    """A topic's JSON object -> a table row: the ``ms_fields`` ISO timestamps -> epoch ms."""
    row = dict(message)
    for f in ms_fields:
        if row.get(f) is not None:
            row[f] = iso_to_ms(row[f])
    return row


def features_row(message: Mapping[str, Any]) -> dict[str, Any]:
    return topic_row(message, ("event_time", "computed_at"))


def candles_row(message: Mapping[str, Any]) -> dict[str, Any]:
    return topic_row(message, ("emitted_at",))


# ------------------------------------------------------- Python values -> column values
def base_type(ch_type: str) -> tuple[str, bool]:
    """``Nullable(T)`` -> ``(T, True)``; any other type -> ``(type, False)``."""
    m = re.fullmatch(r"Nullable\((.*)\)", ch_type)
    return (m.group(1), True) if m else (ch_type, False)


def df_column(series: pd.Series, ch_type: str) -> list[Any]:
    """A DataFrame column -> Python values; NaN/NA in a ``Nullable`` column is NULL."""
    _, nullable = base_type(ch_type)
    values = series.tolist()  # numpy scalars -> Python
    if nullable:
        return [None if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))
                else v for v in values]  # fmt: skip
    return [None if v is pd.NA else v for v in values]


def normalise(values: list[Any], ch_type: str) -> list[Any]:
    """bool -> int for integer columns, int -> float for float columns."""
    base, _ = base_type(ch_type)
    if base.startswith(("Int", "UInt")):
        return [int(v) if isinstance(v, bool) else v for v in values]
    if base.startswith("Float"):
        return [float(v) if isinstance(v, int) else v for v in values]
    return values
