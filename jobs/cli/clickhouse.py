"""``candleflow clickhouse migrate|query``: the analytics store."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from infra.settings import get_settings
from jobs.cli.common import console, fail


def clickhouse_migrate(
    url: str = typer.Option("", help="override CANDLEFLOW_CLICKHOUSE_URL"),
) -> None:
    """Apply sql/clickhouse/NNN_*.sql not yet in schema_migrations (re-runnable)."""
    from infra.clickhouse import ClickHouseError, connect

    try:
        with connect(url or get_settings()) as store:
            applied = store.migrate()
            console.print(
                f"{store.backend} {store.version()} database {store.database}: "
                + (f"applied {', '.join(applied)}" if applied else "up to date")
            )
    except ClickHouseError as e:
        fail(str(e))


def clickhouse_query(
    sql: str = typer.Argument(..., help="one SQL statement"),
    url: str = typer.Option("", help="override CANDLEFLOW_CLICKHOUSE_URL"),
    limit: int = typer.Option(100, help="show at most N rows"),
) -> None:
    """Run one statement and print the result as a table."""
    from infra.clickhouse import ClickHouseError, connect

    try:
        with connect(url or get_settings()) as store:
            is_select = sql.lstrip().split(None, 1)[0].upper() in (
                "SELECT", "SHOW", "DESCRIBE", "DESC", "EXISTS", "WITH",
            )  # fmt: skip
            if not is_select:
                store.execute(sql)
                console.print("ok")
                return
            rows = store.query(sql)
    except ClickHouseError as e:
        fail(str(e))
        return
    except Exception as e:  # the server's / chDB's own error text is the useful part
        fail(str(e).strip().splitlines()[0] if str(e).strip() else repr(e))
        return
    t = Table(*(rows[0].keys() if rows else []))
    for r in rows[:limit]:
        t.add_row(*("NULL" if v is None else str(v) for v in r.values()))
    Console().print(t)
    console.print(f"{len(rows):,} row(s)" + (f", first {limit} shown" if len(rows) > limit else ""))
