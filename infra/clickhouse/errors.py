"""The store's errors, and the only two ways a name or a value enters SQL text."""

from __future__ import annotations

import re

_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ClickHouseError(RuntimeError):
    """A store could not be reached, a migration failed, or rows do not fit a table."""


class ClickHouseDataError(ClickHouseError):
    """The rows themselves do not fit the table (a value its column type cannot hold)."""


def ident(name: str) -> str:
    """``name`` if it is a plain identifier (safe to put into SQL unquoted), else an error."""
    if not _IDENT.match(name):
        raise ClickHouseError(f"not a plain identifier: {name!r}")
    return name


def quote(value: str) -> str:
    """A ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
