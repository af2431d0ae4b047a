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


OURS = ("udfs", "infra", "jobs", "bentos")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of ours it imports (lazy imports included; ``from pkg import
    name`` counts as the submodule ``pkg.name`` when there is one)."""
    files = [p for layer in OURS for p in sorted((REPO_ROOT / layer).rglob("*.py"))]
    modules = {module_name(p) for p in files}
    graph: dict[str, set[str]] = {}
    for p in files:
        me = module_name(p)
        deps: set[str] = set()
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for a in node.names:
                    sub = f"{node.module}.{a.name}"
                    deps.add(sub if sub in modules else node.module)
        graph[me] = {d for d in deps if d in modules and d != me}
    return graph


def test_no_import_cycles() -> None:
    graph = import_graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(graph[m]):
            if state.get(d) == 1:
                cycles.append([*stack[stack.index(d) :], d])
            elif d not in state:
                visit(d, [*stack, d])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert cycles == []


def test_no_production_file_over_500_lines() -> None:
    long = {
        str(p.relative_to(REPO_ROOT)): n
        for layer in (*OURS, "feature_repo")
        for p in sorted((REPO_ROOT / layer).rglob("*.py"))
        if (n := len(p.read_text().splitlines())) > 500
    }
    assert long == {}
