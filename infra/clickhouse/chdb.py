"""The chDB backend: embedded ClickHouse in this process, one data path per process."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd

from infra.clickhouse.errors import ClickHouseDataError, ClickHouseError, ident
from infra.clickhouse.rows import base_type
from infra.clickhouse.store import ClickHouseStore

_ARROW_TYPES = {
    "Int8": "int8",
    "Int16": "int16",
    "Int32": "int32",
    "Int64": "int64",
    "UInt8": "uint8",
    "UInt16": "uint16",
    "UInt32": "uint32",
    "UInt64": "uint64",
    "Float32": "float32",
    "Float64": "float64",
    "String": "string",
}


class ChdbStore(ClickHouseStore):
    """Embedded ClickHouse (chDB) on a data path; one path per process."""

    backend = "chdb"

    def __init__(self, url: str) -> None:
        import chdb

        parts = urlsplit(url)
        path = parts.netloc + parts.path if parts.netloc != ":memory:" else ":memory:"
        self.url = url
        self.path = path
        self.database = ident(parse_qs(parts.query).get("database", ["default"])[0])
        if path != ":memory:":
            Path(path).mkdir(parents=True, exist_ok=True)
        try:
            self._conn = chdb.connect(path)
        except Exception as e:
            raise ClickHouseError(
                f"cannot open chDB at {path}: {e} (chDB allows one data path per process)"
            ) from e
        self._conn.query(f"CREATE DATABASE IF NOT EXISTS {self.database}")
        self._conn.query(f"USE {self.database}")

    def execute(self, sql: str) -> None:
        self._conn.query(sql)

    def query(self, sql: str) -> list[dict[str, Any]]:
        table = self._conn.query(sql, "ArrowTable")
        return list(table.to_pylist())

    def query_df(self, sql: str) -> pd.DataFrame:
        return self._conn.query(sql, "DataFrame")

    def _insert_columns(
        self, table: str, columns: list[str], types: list[str], data: list[list[Any]]
    ) -> None:
        import pyarrow as pa

        arrays = []
        for col, t, values in zip(columns, types, data, strict=True):
            arrow_type = _ARROW_TYPES.get(base_type(t)[0])
            try:
                arrays.append(pa.array(values, type=arrow_type))
            except (pa.ArrowException, TypeError, ValueError, OverflowError) as e:
                raise ClickHouseDataError(f"{table}.{col} ({t}): {e}") from e
        cf_insert_rows = pa.Table.from_arrays(arrays, names=columns)  # read by Python(...)
        # INSERT ... SELECT FROM Python(<the Arrow table>), not send_insert(): chDB 4.4's
        # streaming insert reports success and drops the block when the server rejects it
        # (a CHECK constraint, "too many partitions for single INSERT block"); this raises
        cols = ", ".join(columns)
        self._conn.query(
            f"INSERT INTO {self.database}.{table} ({cols}) "
            f"SELECT {cols} FROM Python(cf_insert_rows)"
        )
        del cf_insert_rows

    def close(self) -> None:
        self._conn.close()
