"""Migrations: the files ``sql/clickhouse/NNN_name.sql``, then generated ``ALTER`` statements.

``migrate(store)`` does two things, in order (the rules: sql/clickhouse/README.md):

1. applies every file not yet recorded in ``schema_migrations``. A file's checksum is
   taken over its statements *before* its ``${...}`` placeholders are rendered, so a
   template such as 002's ``${feature_columns}`` keeps its identity when the feature list
   changes. Records written before that rule hold the checksum of the rendered statements;
   such a record is recognised (rendered with the current parameters, or with the ones the
   database's own columns give) and rewritten once to the template checksum.
2. brings every model-derived table (:data:`MODEL_TABLES`; today ``features``, whose middle
   columns are ``udfs.indicators.FEATURE_NAMES``) up to the code: each column the code has
   and the table lacks is added by ``ALTER TABLE t ADD COLUMN c T AFTER <previous>`` and
   recorded as a generated migration (version >= :data:`GENERATED_VERSION_BASE`, name
   ``<table>_add_<column>``). Columns the code no longer has are left in place, with a
   warning: nothing is ever dropped.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from infra.clickhouse.errors import ClickHouseError, quote
from infra.clickhouse.rows import FEATURES_BASE_COLUMNS, FEATURES_TAIL_COLUMNS, Row
from infra.settings import REPO_ROOT

log = logging.getLogger(__name__)

MIGRATIONS_DIR = REPO_ROOT / "sql" / "clickhouse"
MIGRATIONS_TABLE = "schema_migrations"
# versions of generated migrations: from here on, one per added column, in the order
# applied (files are NNN = 1..999, so the two ranges never meet)
GENERATED_VERSION_BASE = 1000
_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")
_MIGRATION_FILE = re.compile(r"^(\d{3})_(\w+)\.sql$")


class Store(Protocol):
    """What the migrations need of a store (:class:`infra.clickhouse.ClickHouseStore`)."""

    database: str

    def execute(self, sql: str) -> None: ...

    def query(self, sql: str) -> list[dict[str, Any]]: ...

    def table_columns(self, table: str) -> dict[str, str]: ...

    def insert(self, table: str, rows: Sequence[Row]) -> int: ...


def checksum(statements: Sequence[str]) -> str:
    return hashlib.sha256("\n;\n".join(statements).encode()).hexdigest()[:16]


# --------------------------------------------------------------- model-derived tables
def _feature_names() -> list[str]:
    from udfs.indicators import FEATURE_NAMES  # read on every call, never cached

    return list(FEATURE_NAMES)


@dataclass(frozen=True)
class ModelTable:
    """A table whose middle columns come from the code: ``head``, then one ``column_type``
    column per name of ``names()``, then ``tail``. A migration file creates it with the
    ``${placeholder}`` rendered from the names; generated migrations add the names that
    came later."""

    table: str
    placeholder: str
    head: tuple[str, ...]
    tail: tuple[str, ...]
    column_type: str
    names: Callable[[], list[str]]

    def columns(self, names: Sequence[str] | None = None) -> list[str]:
        return [*self.head, *(self.names() if names is None else names), *self.tail]

    def render(self, names: Sequence[str]) -> str:
        """The placeholder's text for these names."""
        return ",\n".join(f"    {n} {self.column_type}" for n in names)

    def names_in(self, columns: Sequence[str]) -> list[str]:
        """The model columns among a table's insertable columns, in the table's order."""
        fixed = {*self.head, *self.tail}
        return [c for c in columns if c not in fixed]


FEATURES_TABLE = ModelTable(
    "features",
    "feature_columns",
    FEATURES_BASE_COLUMNS,
    FEATURES_TAIL_COLUMNS,
    "Nullable(Float64)",
    _feature_names,
)
MODEL_TABLES: tuple[ModelTable, ...] = (FEATURES_TABLE,)


def migration_params() -> dict[str, str]:
    """Values for ``${...}`` placeholders in the migrations (generated, never typed twice)."""
    return {t.placeholder: t.render(t.names()) for t in MODEL_TABLES}


@dataclass(frozen=True)
class ColumnPlan:
    """What brings a table's columns to the code's: ``add`` (column, the column it goes
    after), in order; ``extra``: columns the code no longer has (kept)."""

    add: tuple[tuple[str, str], ...]
    extra: tuple[str, ...]


def plan_columns(model: ModelTable, actual: Sequence[str]) -> ColumnPlan:
    """Compare a table's insertable columns with the code's (pure; no database)."""
    want = model.columns()
    missing_fixed = [c for c in (*model.head, *model.tail) if c not in actual]
    if missing_fixed:
        raise ClickHouseError(
            f"table {model.table} lacks {missing_fixed}, which are not model columns: "
            "add a migration file for them"
        )
    have = list(actual)
    add: list[tuple[str, str]] = []
    for i, c in enumerate(want):
        if c not in have:
            after = want[i - 1]  # i > 0: head is never missing; want[i - 1] is in have
            add.append((c, after))
            have.insert(have.index(after) + 1, c)
    return ColumnPlan(tuple(add), tuple(c for c in actual if c not in want))


# ----------------------------------------------------------------------- file migrations
@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path
    statements: tuple[str, ...]  # rendered: what runs
    source: str = ""  # the file without comments, placeholders not rendered

    @property
    def label(self) -> str:
        return f"{self.version:03d}_{self.name}"

    @property
    def template(self) -> tuple[str, ...]:
        return tuple(split_statements(self.source)) if self.source else self.statements

    @property
    def checksum(self) -> str:
        """Over the statements before placeholders are rendered: what ``schema_migrations``
        records."""
        return checksum(self.template)

    @property
    def rendered_checksum(self) -> str:
        """Over the rendered statements: what records written before the template rule
        hold."""
        return checksum(self.statements)

    def render(self, params: Mapping[str, str]) -> tuple[str, ...]:
        return tuple(split_statements(render(self.source, params, self.path)))


def strip_comments(text: str) -> str:
    """Drop whole-line ``--`` comments (before placeholders are filled)."""
    return "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("--"))


def split_statements(text: str) -> list[str]:
    """Split on a ``;`` that ends a line."""
    parts = re.split(r";\s*(?:\n|$)", text)
    return [p.strip() for p in parts if p.strip()]


def render(text: str, params: Mapping[str, str], path: Path) -> str:
    def fill(match: re.Match[str]) -> str:
        if match.group(1) not in params:
            raise ClickHouseError(f"{path.name}: no value for ${{{match.group(1)}}}")
        return params[match.group(1)]

    return _PLACEHOLDER.sub(fill, text)


def load_migrations(
    sql_dir: Path = MIGRATIONS_DIR, params: Mapping[str, str] | None = None
) -> list[Migration]:
    params = migration_params() if params is None else params
    out: list[Migration] = []
    for path in sorted(sql_dir.glob("*.sql")):
        m = _MIGRATION_FILE.match(path.name)
        if not m:
            raise ClickHouseError(f"{path.name}: migrations are named NNN_name.sql")
        source = strip_comments(path.read_text())
        statements = tuple(split_statements(render(source, params, path)))
        out.append(Migration(int(m.group(1)), m.group(2), path, statements, source))
    versions = [m.version for m in out]
    if len(set(versions)) != len(versions):
        raise ClickHouseError(f"duplicate migration numbers in {sql_dir}: {versions}")
    return out


# ------------------------------------------------------------------------------ migrate
def ensure_migrations_table(store: Store) -> None:
    store.execute(
        f"CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE} ("
        "version UInt32, name String, checksum String, applied_at_ms Int64"
        ") ENGINE = ReplacingMergeTree(applied_at_ms) ORDER BY version"
    )


def applied_migrations(store: Store) -> dict[int, dict[str, Any]]:
    ensure_migrations_table(store)
    rows = store.query(
        f"SELECT version, name, checksum, applied_at_ms FROM {MIGRATIONS_TABLE} FINAL "
        "ORDER BY version"
    )
    return {int(r["version"]): r for r in rows}


def _record(store: Store, version: int, name: str, digest: str, at_ms: int) -> None:
    row = {"version": version, "name": name, "checksum": digest, "applied_at_ms": at_ms}
    store.insert(MIGRATIONS_TABLE, [row])


def _columns_or_none(store: Store, table: str) -> list[str] | None:
    exists = store.query(
        f"SELECT count() AS n FROM system.tables WHERE database = {quote(store.database)} "
        f"AND name = {quote(table)}"
    )
    return list(store.table_columns(table)) if exists[0]["n"] else None


def _schema_params(store: Store) -> dict[str, str]:
    """Placeholder values from the database's own model columns (the current code's for a
    table that does not exist): what a file rendered when it was applied."""
    params = migration_params()
    for t in MODEL_TABLES:
        cols = _columns_or_none(store, t.table)
        if cols is not None:
            params[t.placeholder] = t.render(t.names_in(cols))
    return params


def _check_applied(store: Store, m: Migration, recorded: Mapping[str, Any]) -> None:
    """An applied file must be unchanged; a record with the pre-template (rendered)
    checksum of the same file is rewritten to the template checksum."""
    if recorded["checksum"] == m.checksum:
        return
    legacy = {m.rendered_checksum}
    if m.source and _PLACEHOLDER.search(m.source):
        legacy.add(checksum(m.render(_schema_params(store))))
    if recorded["checksum"] not in legacy:
        raise ClickHouseError(
            f"migration {m.label} changed after it was applied to "
            f"{store.database} (checksum {recorded['checksum']} -> "
            f"{m.checksum}); add a new migration instead"
        )
    # +1 ms: ReplacingMergeTree(applied_at_ms) keeps this row, and the time stays the
    # original application's (to the millisecond)
    _record(store, m.version, m.name, m.checksum, int(recorded["applied_at_ms"]) + 1)
    log.info(
        "%s: recorded checksum %s of %s is the rendered one; now %s (the template's)",
        store.database,
        recorded["checksum"],
        m.label,
        m.checksum,
    )


def _evolve(store: Store, model: ModelTable, next_version: int) -> list[str]:
    """Generated migrations adding the model columns ``model.table`` lacks."""
    actual = _columns_or_none(store, model.table)
    if actual is None:  # no migration file created it (a test's own sql_dir)
        return []
    plan = plan_columns(model, actual)
    for c in plan.extra:
        log.warning(
            "%s.%s: column %s is no longer in the code; left in place (never dropped)",
            store.database,
            model.table,
            c,
        )
    done: list[str] = []
    for column, after in plan.add:
        name = f"{model.table}_add_{column}"
        label = f"{next_version:03d}_{name}"
        stmt = f"ALTER TABLE {model.table} ADD COLUMN {column} {model.column_type} AFTER {after}"
        try:
            store.execute(stmt)
        except Exception as e:
            if column in store.table_columns(model.table):  # another migrate() was first
                log.info("%s: %s.%s was added meanwhile", store.database, model.table, column)
                continue
            raise ClickHouseError(f"migration {label} failed: {e}\n{stmt}") from e
        _record(store, next_version, name, checksum([stmt]), int(time.time() * 1000))
        log.info("applied %s to %s", label, store.database)
        done.append(label)
        next_version += 1
    return done


def migrate(store: Store, sql_dir: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply ``sql_dir/NNN_name.sql`` not yet recorded in ``schema_migrations``, in order,
    then the generated migrations that add new model columns (module docstring).

    Re-running is a no-op. Every file statement is ``IF NOT EXISTS``, so a migration that
    failed half-way can simply be run again; a generated one is planned from
    ``system.columns``, so it runs only while its column is missing. A recorded file whose
    template changed is an error (write a new migration instead of editing an applied one).
    Returns the labels applied now (``NNN_name``; generated: ``1000_features_add_x`` ...).
    """
    applied = applied_migrations(store)
    done: list[str] = []
    for m in load_migrations(sql_dir):
        if m.version in applied:
            _check_applied(store, m, applied[m.version])
            continue
        for stmt in m.statements:
            try:
                store.execute(stmt)
            except Exception as e:
                raise ClickHouseError(f"migration {m.label} failed: {e}\n{stmt}") from e
        _record(store, m.version, m.name, m.checksum, int(time.time() * 1000))
        log.info("applied %s to %s", m.label, store.database)
        done.append(m.label)
    generated = [v for v in applied if v >= GENERATED_VERSION_BASE]
    next_version = max(generated, default=GENERATED_VERSION_BASE - 1) + 1
    for model in MODEL_TABLES:
        added = _evolve(store, model, next_version)
        next_version += len(added)
        done += added
    return done
