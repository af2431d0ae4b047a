"""Load a Flink SQL file: fill ``${...}`` placeholders and split it into statements."""

from __future__ import annotations

import re
from pathlib import Path

from infra.settings import REPO_ROOT

SQL_DIR = REPO_ROOT / "sql" / "flink"
_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")


def _param(params: dict[str, str], name: str, path: Path) -> str:
    if name not in params:
        raise KeyError(f"{path.name}: no value for placeholder ${{{name}}}")
    return params[name]


def load_statements(name_or_path: str | Path, params: dict[str, str]) -> list[str]:
    path = Path(name_or_path)
    if not path.is_absolute() and not path.exists():
        path = SQL_DIR / path
    # drop whole-line comments, fill ${name} (only the braced form: '$.price' is a JSON path)
    lines = [ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("--")]
    text = _PLACEHOLDER.sub(lambda m: _param(params, m.group(1), path), "\n".join(lines))
    # split on a ';' that ends a line
    parts = re.split(r";\s*(?:\n|$)", text)
    return [p.strip() for p in parts if p.strip()]


def is_insert(stmt: str) -> bool:
    return stmt.lstrip().upper().startswith("INSERT")
