"""The writers' column types, derived from the topic models (:mod:`udfs.topics`).

One table, :data:`COLUMN_OF_KIND`, says how each kind of field is checked and stored
(:class:`Column`); :func:`topic_columns` gives a topic's fields in order with their
columns. The candles, features and trading writers validate with it, so their checks, the
rows they insert and the ClickHouse tables follow the one model.
"""

from __future__ import annotations

from dataclasses import replace

from jobs.writers.validation import (
    BAR_END_MS,
    COUNT,
    EPOCH_MS,
    FLAG,
    FLOAT,
    FLOAT_OR_NULL,
    IDENT,
    INT64,
    ISO_MS,
    TEXT_OR_NULL,
    UINT32,
    Column,
    one_of,
)
from udfs.topics import TOPICS, Field, Kind

COLUMN_OF_KIND: dict[Kind, Column] = {
    "ident": IDENT,
    "model_tag": Column("String", ident=True, null_as=""),  # null -> '' (a sorting key)
    "text_or_null": TEXT_OR_NULL,
    "epoch_ms": EPOCH_MS,
    "bar_end_ms": BAR_END_MS,
    "iso_ms": ISO_MS,
    "iso_or_epoch_ms": replace(ISO_MS, epoch_ok=True),
    "count": COUNT,
    "int64": INT64,
    "uint32": UINT32,
    "float": FLOAT,
    "float_or_null": FLOAT_OR_NULL,
    "num_or_null": replace(FLOAT_OR_NULL, nan=True),  # NaN is stored as NaN
    "flag": FLAG,
}


def column(field: Field) -> Column:
    return one_of(*field.choices) if field.kind == "choice" else COLUMN_OF_KIND[field.kind]


def topic_columns(topic: str) -> dict[str, Column]:
    """``topic``'s fields in order -> the column each is checked against and stored in."""
    return {name: column(f) for name, f in TOPICS[topic].items()}
