"""The pure parts of schema evolution: template checksums and the column plan (the
database side runs in tests/integration/infra/test_clickhouse_schema_evolution.py)."""

from __future__ import annotations

import pytest

import udfs.indicators
from infra.clickhouse import (
    FEATURES_TABLE,
    MODEL_TABLES,
    ClickHouseError,
    Migration,
    features_columns,
    load_migrations,
    migration_params,
    plan_columns,
)
from udfs.indicators import FEATURE_NAMES


def _features_migration(names: list[str], monkeypatch: pytest.MonkeyPatch) -> Migration:
    monkeypatch.setattr(udfs.indicators, "FEATURE_NAMES", names)
    (m,) = [m for m in load_migrations() if m.name == "features"]
    return m


def test_template_checksum_ignores_the_feature_list(monkeypatch: pytest.MonkeyPatch) -> None:
    full = _features_migration(FEATURE_NAMES, monkeypatch)
    short = _features_migration(FEATURE_NAMES[:-1], monkeypatch)
    assert full.checksum == short.checksum  # the file did not change
    assert full.rendered_checksum != short.rendered_checksum  # what older records hold
    assert full.statements != short.statements
    assert any("${feature_columns}" in s for s in full.template)
    # re-rendering with other parameters gives what load_migrations gave for them
    assert full.render({"feature_columns": FEATURES_TABLE.render(FEATURE_NAMES[:-1])}) == (
        short.statements
    )


def test_files_without_placeholders_keep_their_checksum() -> None:
    for m in load_migrations():
        if "${" not in m.source:
            assert m.checksum == m.rendered_checksum, m.label


def test_model_table_is_the_features_topic() -> None:
    assert MODEL_TABLES == (FEATURES_TABLE,)
    assert FEATURES_TABLE.columns() == features_columns()
    assert migration_params() == {"feature_columns": FEATURES_TABLE.render(FEATURE_NAMES)}
    assert FEATURES_TABLE.names_in(features_columns()) == FEATURE_NAMES


def test_plan_appended_and_inserted_columns() -> None:
    cols = features_columns()
    assert plan_columns(FEATURES_TABLE, cols).add == ()
    last, mid = FEATURE_NAMES[-1], FEATURE_NAMES[3]
    actual = [c for c in cols if c not in (last, mid)]
    plan = plan_columns(FEATURES_TABLE, actual)
    assert plan.add == ((mid, FEATURE_NAMES[2]), (last, FEATURE_NAMES[-2])) and plan.extra == ()
    # two new names in a row: the second goes after the first
    plan = plan_columns(FEATURES_TABLE, [c for c in cols if c not in FEATURE_NAMES[-2:]])
    assert plan.add == (
        (FEATURE_NAMES[-2], FEATURE_NAMES[-3]),
        (FEATURE_NAMES[-1], FEATURE_NAMES[-2]),
    )
    # a first feature goes after the last base column
    plan = plan_columns(FEATURES_TABLE, [c for c in cols if c != FEATURE_NAMES[0]])
    assert plan.add == ((FEATURE_NAMES[0], "trade_count"),)


def test_plan_keeps_removed_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(udfs.indicators, "FEATURE_NAMES", [*FEATURE_NAMES[1:], "new_1"])
    cols = features_columns()  # the code's: FEATURE_NAMES[0] gone, new_1 at the end
    actual = [*cols[:12], FEATURE_NAMES[0], *[c for c in cols[12:] if c != "new_1"]]
    plan = plan_columns(FEATURES_TABLE, actual)
    assert plan.add == (("new_1", FEATURE_NAMES[-1]),)
    assert plan.extra == (FEATURE_NAMES[0],)


def test_plan_refuses_a_missing_base_column() -> None:
    with pytest.raises(ClickHouseError, match="not model columns"):
        plan_columns(FEATURES_TABLE, [c for c in features_columns() if c != "computed_at"])
