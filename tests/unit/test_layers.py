"""Layers import downward only: udfs -> (nothing of ours) ; infra -> udfs ; jobs -> infra, udfs;
bentos on top (nothing imports it). Checked on every import statement, lazy ones included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from infra.settings import REPO_ROOT

FORBIDDEN = {
    "udfs": {"infra", "jobs", "bentos"},
    "infra": {"jobs", "bentos"},
    "jobs": {"bentos"},
}


def imported_packages(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_no_upward_imports(layer: str) -> None:
    bad = {
        str(p.relative_to(REPO_ROOT)): sorted(imported_packages(p) & FORBIDDEN[layer])
        for p in sorted((REPO_ROOT / layer).rglob("*.py"))
    }
    assert {k: v for k, v in bad.items() if v} == {}
