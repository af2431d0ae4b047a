"""The interface both backends implement (:mod:`infra.clickhouse.server`,
:mod:`infra.clickhouse.chdb`): four primitives per backend, the rest shared here."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from infra.clickhouse import migrations
from infra.clickhouse.errors import ClickHouseError, ident, quote
from infra.clickhouse.rows import Row, df_column, normalise


class ClickHouseStore(ABC):
    """Common interface; :func:`infra.clickhouse.connect` returns one of the two backends."""

    backend: str
    url: str
    database: str

    # --- backend primitives --------------------------------------------------------------
    @abstractmethod
    def execute(self, sql: str) -> None:
        """Run one statement (DDL, INSERT ... SELECT, OPTIMIZE ...)."""

    @abstractmethod
    def query(self, sql: str) -> list[dict[str, Any]]:
        """Rows as dicts with exact Python values (NULL -> None, floats bit-exact)."""

    @abstractmethod
    def query_df(self, sql: str) -> pd.DataFrame:
        """Rows as a DataFrame (pandas conventions: NULL in a float column is NaN)."""

    @abstractmethod
    def _insert_columns(
        self, table: str, columns: list[str], types: list[str], data: list[list[Any]]
    ) -> None:
        """Insert column-major data (Python values, None = NULL)."""

    @abstractmethod
    def close(self) -> None: ...

    # --- shared ------------------------------------------------------------------------
    def __enter__(self) -> ClickHouseStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def version(self) -> str:
        return str(self.query("SELECT version() AS v")[0]["v"])

    def table_columns(self, table: str) -> dict[str, str]:
        """Insertable columns (not MATERIALIZED/ALIAS) of ``table`` -> ClickHouse type, in order.

        Read from ``system.columns`` on every call (never cached), so a column added by a
        migration is written from the next insert on."""
        rows = self.query(
            "SELECT name, type, default_kind FROM system.columns "
            f"WHERE database = {quote(self.database)} AND table = {quote(ident(table))}"
        )
        if not rows:
            raise ClickHouseError(f"table {self.database}.{table} does not exist")
        return {
            r["name"]: r["type"]
            for r in rows
            if r["default_kind"] not in ("MATERIALIZED", "ALIAS", "EPHEMERAL")
        }

    def insert(self, table: str, rows: Sequence[Row] | pd.DataFrame) -> int:
        """Insert rows (dicts with the same keys, or a DataFrame); returns the row count.

        Dict rows: ``None`` is NULL, NaN stays NaN. DataFrame: NaN/NA in a ``Nullable``
        column is NULL (pandas has no other way to say missing), NaN elsewhere stays NaN.
        Missing columns get the table's defaults.
        """
        table_types = self.table_columns(table)
        if isinstance(rows, pd.DataFrame):
            if rows.empty:
                return 0
            columns = [str(c) for c in rows.columns]
            data = [df_column(rows[c], table_types.get(c, "")) for c in rows.columns]
            n = len(rows)
        else:
            if not rows:
                return 0
            columns = list(rows[0].keys())
            keyset = set(columns)
            for i, r in enumerate(rows):
                if set(r.keys()) != keyset:
                    raise ClickHouseError(f"{table}: row {i} has other keys than row 0")
            data = [[r[c] for r in rows] for c in columns]
            n = len(rows)
        unknown = [c for c in columns if c not in table_types]
        if unknown:
            raise ClickHouseError(f"{table}: no insertable column(s) {unknown}")
        types = [table_types[c] for c in columns]
        data = [normalise(col, t) for col, t in zip(data, types, strict=True)]
        self._insert_columns(ident(table), [ident(c) for c in columns], types, data)
        return n

    # --- migrations (infra/clickhouse/migrations.py) -------------------------------------
    def applied_migrations(self) -> dict[int, dict[str, Any]]:
        """``schema_migrations`` by version: name, checksum, applied_at_ms."""
        return migrations.applied_migrations(self)

    def migrate(self, sql_dir: Path = migrations.MIGRATIONS_DIR) -> list[str]:
        """Bring the database up to date; returns the migrations applied now (see
        :func:`infra.clickhouse.migrations.migrate`)."""
        return migrations.migrate(self, sql_dir)
