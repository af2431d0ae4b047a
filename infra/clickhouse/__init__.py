"""The analytics store: one small interface over a ClickHouse server or embedded chDB.

``connect(url)`` picks the backend from the URL:

* ``clickhouse://[user[:password]@]host:port/database`` - a ClickHouse server over the
  native protocol (clickhouse-driver). Tested against Debian's 18.16 and written so that
  newer servers work too.
* ``chdb:///absolute/path[?database=NAME]`` (or ``chdb://relative/path``, ``chdb://:memory:``)
  - embedded ClickHouse (chDB 26.9) in this process. chDB allows one data path per process.

Both backends take the same migrations (``sql/clickhouse/NNN_name.sql``), the same rows and
give back the same values: floats round-trip bit-exactly, NULL stays ``None`` and NaN stays
NaN. Rows are never formatted into SQL text: the server gets them as a parameter of
``INSERT ... VALUES`` (inline VALUES hang clickhouse-driver on 18.16), chDB as an Arrow
table built with the table's column types (``INSERT ... SELECT ... FROM Python(...)``).

The package, by role: :mod:`~infra.clickhouse.store` (the interface and what both backends
share), :mod:`~infra.clickhouse.server` and :mod:`~infra.clickhouse.chdb` (the backends),
:mod:`~infra.clickhouse.migrations` (migration files and generated ``ALTER`` statements that add
new model columns), :mod:`~infra.clickhouse.rows` (topic messages -> rows),
:mod:`~infra.clickhouse.trading` (the strategy job's tables) and
:mod:`~infra.clickhouse.errors`. Import the public names from here.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from infra.clickhouse.chdb import ChdbStore
from infra.clickhouse.errors import ClickHouseDataError, ClickHouseError
from infra.clickhouse.migrations import (
    FEATURES_TABLE,
    GENERATED_VERSION_BASE,
    MIGRATIONS_DIR,
    MIGRATIONS_TABLE,
    MODEL_TABLES,
    ColumnPlan,
    Migration,
    ModelTable,
    load_migrations,
    migration_params,
    plan_columns,
    split_statements,
    strip_comments,
)
from infra.clickhouse.rows import (
    FEATURES_BASE_COLUMNS,
    FEATURES_TAIL_COLUMNS,
    Row,
    candles_row,
    features_columns,
    features_row,
    iso_to_ms,
    topic_row,
)
from infra.clickhouse.server import ServerStore
from infra.clickhouse.store import ClickHouseStore
from infra.clickhouse.trading import TRADING_TABLES, TradingSummary, trading_summary
from infra.settings import Settings

__all__ = [
    "FEATURES_BASE_COLUMNS",
    "FEATURES_TABLE",
    "FEATURES_TAIL_COLUMNS",
    "GENERATED_VERSION_BASE",
    "MIGRATIONS_DIR",
    "MIGRATIONS_TABLE",
    "MODEL_TABLES",
    "TRADING_TABLES",
    "ChdbStore",
    "ClickHouseDataError",
    "ClickHouseError",
    "ClickHouseStore",
    "ColumnPlan",
    "Migration",
    "ModelTable",
    "Row",
    "ServerStore",
    "TradingSummary",
    "candles_row",
    "connect",
    "default_url",
    "features_columns",
    "features_row",
    "iso_to_ms",
    "load_migrations",
    "migration_params",
    "plan_columns",
    "split_statements",
    "strip_comments",
    "topic_row",
    "trading_summary",
]


def default_url(settings: Settings) -> str:
    return f"chdb://{settings.state_dir.resolve() / 'chdb'}"


def connect(url_or_settings: str | Settings | None = None) -> ClickHouseStore:
    """Open the store named by a URL, by ``Settings.clickhouse_url``, or by the defaults."""
    from infra.settings import get_settings

    if url_or_settings is None:
        url_or_settings = get_settings()
    url = url_or_settings if isinstance(url_or_settings, str) else url_or_settings.clickhouse_url
    scheme = urlsplit(url).scheme
    if scheme in ("clickhouse", "tcp"):
        return ServerStore(url)
    if scheme == "chdb":
        return ChdbStore(url)
    raise ClickHouseError(
        f"unknown ClickHouse URL {url!r}: use clickhouse://host:port/db or chdb://PATH"
    )
