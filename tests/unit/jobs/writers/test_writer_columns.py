"""The writers' column tables (jobs/writers/validation.Column) against the migrated tables
(sql/clickhouse/*.sql): every field's ClickHouse type is its column's, and every field
that feeds a MATERIALIZED DateTime is held to the DateTime span."""

from __future__ import annotations

import re

import pytest

from infra.clickhouse import TRADING_TABLES, load_migrations
from jobs.writers.candles import COLUMNS as CANDLE_COLUMNS
from jobs.writers.features import COLUMNS as FEATURE_COLUMNS
from jobs.writers.trading import FIELDS as TRADING_FIELDS
from jobs.writers.validation import DATETIME_MS, INT_RANGES, Column, InvalidMessage

WRITERS: dict[str, dict[str, Column]] = {
    "candles": CANDLE_COLUMNS,
    "features": FEATURE_COLUMNS,
    **{TRADING_TABLES[k]: dict(v) for k, v in TRADING_FIELDS.items()},
}


def tables() -> dict[str, dict[str, str]]:
    """table -> column -> its definition (type, and MATERIALIZED expression if any)."""
    out: dict[str, dict[str, str]] = {}
    for m in load_migrations():
        for stmt in m.statements:
            hit = re.match(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\) ENGINE", stmt, re.S)
            if hit:
                cols = [ln.strip().rstrip(",") for ln in hit.group(2).strip().splitlines()]
                out[hit.group(1)] = {c.split()[0]: c.split(None, 1)[1] for c in cols}
    return out


@pytest.mark.parametrize("table", list(WRITERS))
def test_column_types_are_the_tables(table: str) -> None:
    cols = tables()[table]
    stored = {c: d for c, d in cols.items() if " MATERIALIZED " not in d}
    spec = WRITERS[table]
    assert list(spec) == list(stored)  # the same columns, in order
    for name, col in spec.items():
        assert col.ch_type == stored[name], name
        if col.iso:
            assert stored[name] == "Int64", name  # ISO text in the topic, epoch ms stored


@pytest.mark.parametrize("table", list(WRITERS))
def test_fields_feeding_a_datetime_stay_in_its_span(table: str) -> None:
    """``x DateTime('UTC') MATERIALIZED toDateTime(intDiv(<f> [- 1], 1000), 'UTC')``: <f>
    (minus the offset) must be in [0, 2**32 * 1000)."""
    spec = WRITERS[table]
    fed = 0
    for d in tables()[table].values():
        m = re.search(r"MATERIALIZED toDateTime\(intDiv\((\w+)(?: - (\d+))?, 1000\)", d)
        if not m:
            continue
        fed += 1
        f, offset = m.group(1), int(m.group(2) or 0)
        lo, hi = spec[f].bounds
        assert (lo - offset, hi - offset) == DATETIME_MS, f
    assert fed == (0 if table in ("trading_orders", "trading_fills") else 1)  # unpartitioned


def test_every_int_column_is_inside_its_type() -> None:
    for table, spec in WRITERS.items():
        for name, col in spec.items():
            if col.base in INT_RANGES and not col.flag:
                tlo, thi = INT_RANGES[col.base]
                lo, hi = col.bounds
                assert tlo <= lo < hi <= thi, (table, name)


def test_range_edges() -> None:
    ms = FEATURE_COLUMNS["window_start_ms"]
    assert ms.check("w", 0) == 0 and ms.check("w", 2**32 * 1000 - 1) == 2**32 * 1000 - 1
    for v in (-1, 2**32 * 1000):
        with pytest.raises(InvalidMessage, match="out of range"):
            ms.check("w", v)
    iso = FEATURE_COLUMNS["event_time"]
    assert iso.check("e", "2106-02-07T06:28:15.999Z") == "2106-02-07T06:28:15.999Z"
    with pytest.raises(InvalidMessage, match="out of range"):
        iso.check("e", "2106-02-07T06:28:16Z")
