"""The server backend: a ClickHouse server over the native TCP protocol (clickhouse-driver)."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import pandas as pd

from infra.clickhouse.errors import ClickHouseError, ident
from infra.clickhouse.store import ClickHouseStore


class ServerStore(ClickHouseStore):
    """A ClickHouse server over the native TCP protocol (clickhouse-driver)."""

    backend = "server"

    def __init__(self, url: str, connect_timeout_s: float = 5.0) -> None:
        from clickhouse_driver import Client

        parts = urlsplit(url)
        self.url = url
        self.database = ident(parts.path.strip("/") or "default")
        kwargs: dict[str, Any] = {
            "host": parts.hostname or "127.0.0.1",
            "port": parts.port or 9000,
            "user": unquote(parts.username or "default"),
            "password": unquote(parts.password or ""),
            "connect_timeout": connect_timeout_s,
            "send_receive_timeout": 300,
        }
        try:
            if self.database != "default":
                boot = Client(database="default", **kwargs)
                try:
                    boot.execute(f"CREATE DATABASE IF NOT EXISTS {self.database}")
                finally:
                    boot.disconnect()
            self._client = Client(database=self.database, **kwargs)
            self._client.execute("SELECT 1")
        except Exception as e:
            raise ClickHouseError(
                f"cannot reach ClickHouse at {parts.hostname}:{parts.port}: {e}"
            ) from e

    def execute(self, sql: str) -> None:
        self._client.execute(sql)

    def _rows(self, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        rows, cols = self._client.execute(sql, with_column_types=True)
        return [c[0] for c in cols], rows

    def query(self, sql: str) -> list[dict[str, Any]]:
        names, rows = self._rows(sql)
        return [dict(zip(names, r, strict=True)) for r in rows]

    def query_df(self, sql: str) -> pd.DataFrame:
        names, rows = self._rows(sql)
        return pd.DataFrame.from_records(rows, columns=names)

    def _insert_columns(
        self, table: str, columns: list[str], types: list[str], data: list[list[Any]]
    ) -> None:
        rows = list(zip(*data, strict=True))
        self._client.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES", rows)

    def close(self) -> None:
        self._client.disconnect()
