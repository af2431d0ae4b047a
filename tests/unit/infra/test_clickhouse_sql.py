"""The ClickHouse migrations as text: numbering, re-runnability, the features columns."""

from __future__ import annotations

import re

import pytest

from infra.clickhouse import (
    ClickHouseError,
    features_columns,
    iso_to_ms,
    load_migrations,
    split_statements,
)
from infra.settings import Settings
from udfs.indicators import FEATURE_NAMES


def test_migrations_are_numbered_and_rerunnable() -> None:
    ms = load_migrations()
    assert [m.version for m in ms] == list(range(1, len(ms) + 1))
    for m in ms:
        assert m.statements
        for stmt in m.statements:
            assert "${" not in stmt
            assert re.match(r"CREATE (TABLE|MATERIALIZED VIEW|VIEW) IF NOT EXISTS ", stmt), stmt
            # 18.16 has none of these; the same files must run there
            for missing in ("DateTime64", "TTL", "CODEC", "LowCardinality", "Bool", " WITH "):
                assert missing not in stmt, (m.name, missing)


def test_features_migration_columns_are_the_topic_fields() -> None:
    (features,) = [
        s for m in load_migrations() for s in m.statements if "TABLE IF NOT EXISTS features " in s
    ]
    body = features.split("(", 1)[1].rsplit(") ENGINE", 1)[0]
    lines = [ln.strip().rstrip(",") for ln in body.splitlines() if ln.strip()]
    plain = [tuple(ln.split()[:2]) for ln in lines if "MATERIALIZED" not in ln]
    assert [n for n, _ in plain] == features_columns()
    types = dict(plain)
    assert all(types[n] == "Nullable(Float64)" for n in FEATURE_NAMES)
    assert features_columns()[12 : 12 + len(FEATURE_NAMES)] == FEATURE_NAMES


def test_split_and_placeholders(tmp_path: object) -> None:
    assert split_statements("SELECT 1;\nSELECT ';x';\n\n") == ["SELECT 1", "SELECT ';x'"]
    from pathlib import Path

    d = Path(str(tmp_path))
    (d / "001_a.sql").write_text("-- ${not_filled_in_a_comment}\nCREATE TABLE ${x};\n")
    assert load_migrations(d, {"x": "t"})[0].statements == ("CREATE TABLE t",)
    with pytest.raises(ClickHouseError, match="no value"):
        load_migrations(d, {})
    (d / "bad.sql").write_text("")
    with pytest.raises(ClickHouseError, match="NNN_name"):
        load_migrations(d, {"x": "t"})


def test_iso_to_ms_and_default_url(tmp_path: object) -> None:
    assert iso_to_ms("2021-01-01T00:00:59.999Z") == 1_609_459_259_999
    assert iso_to_ms("2021-01-01T00:00:59.999") == 1_609_459_259_999
    assert iso_to_ms("1969-12-31T23:59:59.999Z") == -1
    s = Settings(state_dir=str(tmp_path))  # type: ignore[arg-type]
    assert s.clickhouse_url == f"chdb://{tmp_path}/chdb"
    assert Settings(clickhouse_url="clickhouse://h:1/db").clickhouse_url == "clickhouse://h:1/db"
