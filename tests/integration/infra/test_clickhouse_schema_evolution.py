"""A new indicator migrates an existing database, on both backends (18.16 server, chDB).

The database is first migrated with an older feature list (``udfs.indicators.FEATURE_NAMES``
minus names, patched), holding rows; then ``migrate()`` runs with the real list and must add
the new columns by generated ``ALTER`` migrations, once, without touching applied files.
The fixtures are test_clickhouse.py's (one fresh database per test, server and chDB).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

import udfs.indicators
from infra.clickhouse import (
    GENERATED_VERSION_BASE,
    ClickHouseStore,
    features_columns,
    features_row,
    load_migrations,
)
from jobs.writers.features import parse_feature_message
from tests.integration.infra import test_clickhouse
from tests.integration.infra.test_clickhouse import WS, _features_message
from udfs.indicators import FEATURE_NAMES

pytestmark = pytest.mark.integration

# test_clickhouse.py's fixtures: a fresh database per test on the 18.16 server and on chDB
chdb_path = test_clickhouse.chdb_path
store_url = test_clickhouse.store_url
store = test_clickhouse.store

NEW = FEATURE_NAMES[-2:]
OLD = FEATURE_NAMES[:-2]


def _message(i: int, seed: int) -> dict[str, Any]:
    return _features_message(WS + i * 300_000, "2021-01-01T00:05:00.100Z", seed, True)


def _migrate_with(store: ClickHouseStore, names: list[str], mp: pytest.MonkeyPatch) -> list[str]:
    mp.setattr(udfs.indicators, "FEATURE_NAMES", names)
    return store.migrate()


def _features_record(store: ClickHouseStore) -> dict[str, Any]:
    (m,) = [m for m in load_migrations() if m.name == "features"]
    return store.applied_migrations()[m.version]


@pytest.mark.parametrize("recorded", ["template", "rendered"])
def test_new_indicators_arrive_as_generated_alters(
    store: ClickHouseStore, monkeypatch: pytest.MonkeyPatch, recorded: str
) -> None:
    # --- the database as the previous code left it -----------------------------------
    with monkeypatch.context() as mp:
        _migrate_with(store, OLD, mp)
        old_columns = features_columns()
        assert list(store.table_columns("features")) == old_columns
        if recorded == "rendered":
            # code before the template checksum recorded the rendered statements' checksum
            (m,) = [m for m in load_migrations() if m.name == "features"]
            rec = _features_record(store)
            store.insert(
                "schema_migrations",
                [
                    rec
                    | {"checksum": m.rendered_checksum, "applied_at_ms": rec["applied_at_ms"] + 1}
                ],
            )
            assert _features_record(store)["checksum"] == m.rendered_checksum != m.checksum
        old = features_row(_message(0, 1))
        store.insert("features", [{c: old[c] for c in old_columns}])

    # --- the current code ------------------------------------------------------------
    applied = store.migrate()
    base = GENERATED_VERSION_BASE
    assert applied == [f"{base + i}_features_add_{n}" for i, n in enumerate(NEW)]
    cols = store.table_columns("features")
    assert list(cols) == features_columns()  # the new columns sit after the old last feature
    assert list(cols)[len(old_columns) - 3 : len(old_columns) - 1] == NEW
    assert all(cols[n] == "Nullable(Float64)" for n in NEW)
    # the old row reads NULL in the new columns, everything else unchanged
    (got_old,) = store.query(f"SELECT * FROM features FINAL WHERE window_start_ms = {WS}")
    assert got_old == {c: old[c] for c in old_columns} | dict.fromkeys(NEW)
    # a row written the way the feature writer writes it holds the new values
    msg = _message(1, 2)
    row = features_row(parse_feature_message(json.dumps(msg).encode()))
    assert store.insert("features", [row]) == 1
    new_ws = WS + 300_000
    (got_new,) = store.query(
        f"SELECT {', '.join(NEW)} FROM features FINAL WHERE window_start_ms = {new_ws}"
    )
    assert got_new == {n: msg[n] for n in NEW} and all(v is not None for v in got_new.values())
    # the freshness rollup (a materialized view on `features`) still counts every insert
    (fresh,) = store.query("SELECT countMerge(rows_written) AS n FROM feature_freshness")
    assert fresh["n"] == 2

    # --- applied exactly once, recorded like any other --------------------------------
    assert store.migrate() == []
    applied_now = store.applied_migrations()
    generated = {v: r["name"] for v, r in applied_now.items() if v >= base}
    assert generated == {base + i: f"features_add_{n}" for i, n in enumerate(NEW)}
    assert all(len(applied_now[v]["checksum"]) == 16 for v in generated)
    # the file migrations' records hold their template checksums (002's upgraded if needed)
    assert all(applied_now[m.version]["checksum"] == m.checksum for m in load_migrations())
    n_files = len(load_migrations())
    (count,) = store.query("SELECT count() AS n FROM schema_migrations FINAL")
    assert count["n"] == n_files + len(NEW)


def test_feature_in_the_middle_and_removed_feature(
    store: ClickHouseStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A name inserted mid-list goes to its place; a name the code dropped stays (with a
    warning), and later generated migrations continue the version range."""
    mid = FEATURE_NAMES[5]
    with monkeypatch.context() as mp:
        _migrate_with(store, [n for n in FEATURE_NAMES if n != mid], mp)
        assert _migrate_with(store, FEATURE_NAMES, mp) == [
            f"{GENERATED_VERSION_BASE}_features_add_{mid}"
        ]
        assert list(store.table_columns("features")) == features_columns()
        # the code drops the first feature and gains one at the end
        dropped, later = FEATURE_NAMES[0], "brand_new_20"
        with caplog.at_level(logging.WARNING, logger="infra.clickhouse"):
            applied = _migrate_with(store, [*FEATURE_NAMES[1:], later], mp)
        assert applied == [f"{GENERATED_VERSION_BASE + 1}_features_add_{later}"]
        assert any(dropped in r.getMessage() and "left in place" in r.getMessage()
                   for r in caplog.records)  # fmt: skip
        cols = list(store.table_columns("features"))
        assert cols == [*features_columns()[:12], dropped, *features_columns()[12:]]
        assert cols.index(later) == cols.index(FEATURE_NAMES[-1]) + 1
        assert _migrate_with(store, [*FEATURE_NAMES[1:], later], mp) == []
