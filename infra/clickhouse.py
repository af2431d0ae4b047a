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
stream built with the table's column types.
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pandas as pd

from infra.settings import REPO_ROOT, Settings

log = logging.getLogger(__name__)

MIGRATIONS_DIR = REPO_ROOT / "sql" / "clickhouse"
MIGRATIONS_TABLE = "schema_migrations"
_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")
_MIGRATION_FILE = re.compile(r"^(\d{3})_(\w+)\.sql$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

Row = Mapping[str, Any]


class ClickHouseError(RuntimeError):
    """A store could not be reached, a migration failed, or rows do not fit a table."""


class ClickHouseDataError(ClickHouseError):
    """The rows themselves do not fit the table (a value its column type cannot hold)."""


# ------------------------------------------------------------------------- migrations
@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    statements: tuple[str, ...]

    @property
    def checksum(self) -> str:
        return hashlib.sha256("\n;\n".join(self.statements).encode()).hexdigest()[:16]


def migration_params() -> dict[str, str]:
    """Values for ``${...}`` placeholders in the migrations (generated, never typed twice)."""
    from udfs.indicators import FEATURE_NAMES

    return {"feature_columns": ",\n".join(f"    {n} Nullable(Float64)" for n in FEATURE_NAMES)}


def strip_comments(text: str) -> str:
    """Drop whole-line ``--`` comments (before placeholders are filled)."""
    return "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("--"))


def split_statements(text: str) -> list[str]:
    """Split on a ``;`` that ends a line."""
    parts = re.split(r";\s*(?:\n|$)", text)
    return [p.strip() for p in parts if p.strip()]


def load_migrations(
    sql_dir: Path = MIGRATIONS_DIR, params: Mapping[str, str] | None = None
) -> list[Migration]:
    params = migration_params() if params is None else params
    out: list[Migration] = []
    for path in sorted(sql_dir.glob("*.sql")):
        m = _MIGRATION_FILE.match(path.name)
        if not m:
            raise ClickHouseError(f"{path.name}: migrations are named NNN_name.sql")

        def fill(match: re.Match[str], path: Path = path) -> str:
            if match.group(1) not in params:
                raise ClickHouseError(f"{path.name}: no value for ${{{match.group(1)}}}")
            return params[match.group(1)]

        text = _PLACEHOLDER.sub(fill, strip_comments(path.read_text()))
        out.append(Migration(int(m.group(1)), m.group(2), path, tuple(split_statements(text))))
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise ClickHouseError(f"duplicate migration numbers in {sql_dir}: {versions}")
    return out


# --------------------------------------------------------------- topic rows -> table rows
FEATURES_BASE_COLUMNS = (
    "feature_key",
    "symbol",
    "timeframe",
    "window_start_ms",
    "window_end_ms",
    "open",
    "high",
    "low",
    "close",
    "volume",
    "vwap",
    "trade_count",
)


def features_columns() -> list[str]:
    """The `features` topic's fields in order = the `features` table's (non-materialized)
    columns."""
    from udfs.indicators import FEATURE_NAMES

    return [*FEATURES_BASE_COLUMNS, *FEATURE_NAMES, "features_ready", "event_time", "computed_at"]


def iso_to_ms(value: str | int) -> int:
    """Flink's ISO-8601 ``TIMESTAMP_LTZ(3)`` text (``2021-01-01T00:00:59.999Z``) -> epoch ms
    (text without an offset is UTC)."""
    if isinstance(value, int):
        return value
    dt = datetime.fromisoformat(value)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(milliseconds=1)


def topic_row(message: Mapping[str, Any], ms_fields: Sequence[str]) -> dict[str, Any]:
    """A topic's JSON object -> a table row: the ``ms_fields`` ISO timestamps -> epoch ms."""
    row = dict(message)
    for f in ms_fields:
        if row.get(f) is not None:
            row[f] = iso_to_ms(row[f])
    return row


def features_row(message: Mapping[str, Any]) -> dict[str, Any]:
    return topic_row(message, ("event_time", "computed_at"))


def candles_row(message: Mapping[str, Any]) -> dict[str, Any]:
    return topic_row(message, ("emitted_at",))


# ------------------------------------------------------- the strategy job's tables (005)
# topic kind -> table (jobs/trading_writer.py writes them, sql/clickhouse/005_strategy.sql)
TRADING_TABLES = {
    "predictions": "trading_predictions",
    "orders": "trading_orders",
    "fills": "trading_fills",
    "equity": "trading_equity",
}
_ORDER_DTYPES = {
    "strategy": "object",
    "timeframe": "object",
    "client_order_id": "object",
    "symbol": "object",
    "bar_end_ms": "int64",
    "side": "object",
    "qty": "float64",
    "decision_price": "float64",
    "reason": "object",
    "signal": "float64",
    "status": "object",
}
_FILL_DTYPES = {
    "strategy": "object",
    "timeframe": "object",
    "client_order_id": "object",
    "symbol": "object",
    "bar_end_ms": "int64",
    "side": "object",
    **dict.fromkeys(
        ("qty", "price", "fee", "position_after", "avg_entry_after", "realized_pnl", "cash_after"),
        "float64",
    ),
}
_EQUITY_DTYPES = {
    "strategy": "object",
    "timeframe": "object",
    "bar_end_ms": "int64",
    **dict.fromkeys(("cash", "equity", "gross", "realized_pnl", "fees_paid"), "float64"),
    "killed": "bool",
    "degraded": "int64",
}
_DAILY_DTYPES = {
    "day": "object",
    **dict.fromkeys(
        ("open_equity", "close_equity", "min_equity", "max_equity", "realized_pnl", "fees_paid"),
        "float64",
    ),
    "last_bar_end_ms": "int64",
}
_PREDICTION_DTYPES = {"model_tag": "object", "status": "object", "n": "int64"}


@dataclass
class TradingSummary:
    """One strategy's rows as stored (``FINAL``: one row per key), for reports and Grafana.

    ``orders``: the order messages (NULL signal = NaN) plus ``state``: ``rejected``,
    ``filled`` (a fill with its client_order_id exists) or ``pending``. ``fills`` and
    ``equity``: the messages, by bar. ``daily``: ``pnl_daily`` (UTC day of bar_end_ms - 1):
    first/last/min/max equity of the day's snapshots, realized P&L and fees at the day's
    last bar, and ``pnl`` = this day's close - the previous day's close (the first day:
    close - the first snapshot). ``predictions``: rows per (model_tag, status) of the
    strategy's timeframe(s).
    """

    strategy: str
    orders: pd.DataFrame
    fills: pd.DataFrame
    equity: pd.DataFrame
    daily: pd.DataFrame
    predictions: pd.DataFrame


def _typed_frame(store: ClickHouseStore, sql: str, dtypes: Mapping[str, str]) -> pd.DataFrame:
    """A query's rows with fixed dtypes, the same from both backends (NULL float -> NaN)."""
    rows = store.query(sql)
    df = pd.DataFrame.from_records(rows, columns=list(dtypes))
    return df.astype(dict(dtypes))


def trading_summary(store: ClickHouseStore, strategy: str) -> TradingSummary:
    """Orders, fills, equity, daily P&L and prediction counts of ``strategy`` (see
    :class:`TradingSummary`) from the tables of migration 005, read with ``FINAL``."""
    q = _quote(strategy)
    t = TRADING_TABLES
    orders = _typed_frame(
        store,
        f"SELECT {', '.join(_ORDER_DTYPES)} FROM {t['orders']} FINAL WHERE strategy = {q} "
        "ORDER BY bar_end_ms, client_order_id",
        _ORDER_DTYPES,
    )
    fills = _typed_frame(
        store,
        f"SELECT {', '.join(_FILL_DTYPES)} FROM {t['fills']} FINAL WHERE strategy = {q} "
        "ORDER BY bar_end_ms, client_order_id",
        _FILL_DTYPES,
    )
    equity = _typed_frame(
        store,
        f"SELECT {', '.join(_EQUITY_DTYPES)} FROM {t['equity']} FINAL WHERE strategy = {q} "
        "ORDER BY bar_end_ms",
        _EQUITY_DTYPES,
    )
    daily = _typed_frame(
        store,
        "SELECT toString(day) AS day, argMinMerge(open_equity) AS open_equity, "
        "argMaxMerge(close_equity) AS close_equity, minMerge(min_equity) AS min_equity, "
        "maxMerge(max_equity) AS max_equity, argMaxMerge(close_realized_pnl) AS realized_pnl, "
        "argMaxMerge(close_fees) AS fees_paid, maxMerge(last_ts_ms) AS last_bar_end_ms "
        f"FROM pnl_daily WHERE strategy = {q} GROUP BY day ORDER BY day",
        _DAILY_DTYPES,
    )
    daily["pnl"] = daily["close_equity"].diff()
    if len(daily):
        daily.loc[daily.index[0], "pnl"] = (
            daily["close_equity"].iloc[0] - daily["open_equity"].iloc[0]
        )
    tfs = ", ".join(_quote(str(tf)) for tf in sorted(set(equity["timeframe"]))) or "''"
    predictions = _typed_frame(
        store,
        f"SELECT model_tag, status, count() AS n FROM {t['predictions']} FINAL "
        f"WHERE timeframe IN ({tfs}) GROUP BY model_tag, status ORDER BY model_tag, status",
        _PREDICTION_DTYPES,
    )
    filled = set(fills["client_order_id"])
    orders["state"] = [
        "rejected" if st == "rejected" else "filled" if oid in filled else "pending"
        for st, oid in zip(orders["status"], orders["client_order_id"], strict=True)
    ]
    return TradingSummary(strategy, orders, fills, equity, daily, predictions)


# ---------------------------------------------------------------------------- the store
def _ident(name: str) -> str:
    if not _IDENT.match(name):
        raise ClickHouseError(f"not a plain identifier: {name!r}")
    return name


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class ClickHouseStore(ABC):
    """Common interface; :func:`connect` returns one of the two backends."""

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
        """Insertable columns (not MATERIALIZED/ALIAS) of ``table`` -> ClickHouse type, in order."""
        rows = self.query(
            "SELECT name, type, default_kind FROM system.columns "
            f"WHERE database = {_quote(self.database)} AND table = {_quote(_ident(table))}"
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
            data = [_df_column(rows[c], table_types.get(c, "")) for c in rows.columns]
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
        data = [_normalise(col, t) for col, t in zip(data, types, strict=True)]
        self._insert_columns(_ident(table), [_ident(c) for c in columns], types, data)
        return n

    # --- migrations --------------------------------------------------------------------
    def _ensure_migrations_table(self) -> None:
        self.execute(
            f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
            "version UInt32, name String, checksum String, applied_at_ms Int64"
            ") ENGINE = ReplacingMergeTree(applied_at_ms) ORDER BY version"
        )

    def applied_migrations(self) -> dict[int, dict[str, Any]]:
        self._ensure_migrations_table()
        rows = self.query(
            f"SELECT version, name, checksum, applied_at_ms FROM {MIGRATIONS_TABLE} FINAL "
            "ORDER BY version"
        )
        return {int(r["version"]): r for r in rows}

    def migrate(self, sql_dir: Path = MIGRATIONS_DIR) -> list[str]:
        """Apply ``sql_dir/NNN_name.sql`` not yet recorded in ``schema_migrations``, in order.

        Re-running is a no-op. Every statement is ``IF NOT EXISTS``, so a migration that
        failed half-way can simply be run again. A recorded migration whose rendered text
        changed is an error (write a new migration instead of editing an applied one).
        Returns the names applied now.
        """
        applied = self.applied_migrations()
        done: list[str] = []
        for m in load_migrations(sql_dir):
            label = f"{m.version:03d}_{m.name}"
            if m.version in applied:
                if applied[m.version]["checksum"] != m.checksum:
                    raise ClickHouseError(
                        f"migration {label} changed after it was applied to "
                        f"{self.database} (checksum {applied[m.version]['checksum']} -> "
                        f"{m.checksum}); add a new migration instead"
                    )
                continue
            for stmt in m.statements:
                try:
                    self.execute(stmt)
                except Exception as e:
                    raise ClickHouseError(f"migration {label} failed: {e}\n{stmt}") from e
            self._insert_columns(
                MIGRATIONS_TABLE,
                ["version", "name", "checksum", "applied_at_ms"],
                ["UInt32", "String", "String", "Int64"],
                [[m.version], [m.name], [m.checksum], [int(time.time() * 1000)]],
            )
            log.info("applied %s to %s", label, self.database)
            done.append(label)
        return done


def _base_type(ch_type: str) -> tuple[str, bool]:
    m = re.fullmatch(r"Nullable\((.*)\)", ch_type)
    return (m.group(1), True) if m else (ch_type, False)


def _df_column(series: pd.Series, ch_type: str) -> list[Any]:
    _, nullable = _base_type(ch_type)
    values = series.tolist()  # numpy scalars -> Python
    if nullable:
        return [None if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))
                else v for v in values]  # fmt: skip
    return [None if v is pd.NA else v for v in values]


def _normalise(values: list[Any], ch_type: str) -> list[Any]:
    base, _ = _base_type(ch_type)
    if base.startswith(("Int", "UInt")):
        return [int(v) if isinstance(v, bool) else v for v in values]
    if base.startswith("Float"):
        return [float(v) if isinstance(v, int) else v for v in values]
    return values


# ------------------------------------------------------------------------- server backend
class ServerStore(ClickHouseStore):
    """A ClickHouse server over the native TCP protocol (clickhouse-driver)."""

    backend = "server"

    def __init__(self, url: str, connect_timeout_s: float = 5.0) -> None:
        from clickhouse_driver import Client

        parts = urlsplit(url)
        self.url = url
        self.database = _ident(parts.path.strip("/") or "default")
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


# -------------------------------------------------------------------------- chDB backend
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
        self.database = _ident(parse_qs(parts.query).get("database", ["default"])[0])
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
            arrow_type = _ARROW_TYPES.get(_base_type(t)[0])
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


# ---------------------------------------------------------------------------- factory
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
