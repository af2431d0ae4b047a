"""Production code runs on its declared dependencies alone (what the Docker image installs:
``uv sync --no-default-groups``): every module of jobs/, udfs/, infra/ and bentos/ imports
in a fresh environment without the dev and bench groups."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from infra.settings import REPO_ROOT

PACKAGES = ("jobs", "udfs", "infra", "bentos")


def production_modules() -> list[str]:
    mods = []
    for pkg in PACKAGES:
        for path in sorted((REPO_ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(REPO_ROOT).with_suffix("")
            if any(part.startswith(".") for part in rel.parts):
                continue
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            mods.append(".".join(parts))
    return mods


def test_every_production_module_imports_without_dev_groups(tmp_path: Path) -> None:
    uv = shutil.which("uv") or f"{sys.executable} -m uv"
    venv = tmp_path / "venv"
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv)}
    env.pop("VIRTUAL_ENV", None)
    sync = subprocess.run(
        [*uv.split(), "sync", "--frozen", "--no-default-groups", "--quiet"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert sync.returncode == 0, sync.stderr[-3000:]
    python = venv / "bin" / "python"
    # the dev/bench-only packages really are absent, so the check means something
    absent = subprocess.run(
        [str(python), "-c", "import importlib.util as u; print(u.find_spec('quixstreams'))"],
        capture_output=True,
        text=True,
    )
    assert absent.stdout.strip() == "None", absent.stdout
    mods = production_modules()
    assert len(mods) > 40, mods
    script = (
        "import importlib, sys, traceback\n"
        "bad = []\n"
        f"for m in {mods!r}:\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except Exception:\n"
        "        bad.append((m, traceback.format_exc(limit=3)))\n"
        "for m, tb in bad:\n"
        "    print('FAILED', m, tb)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    run = subprocess.run(
        [str(python), "-c", script],
        cwd=REPO_ROOT,
        env={
            **env,
            "PYTHONPATH": str(REPO_ROOT),
            "BENTOML_DO_NOT_TRACK": "true",
            "CANDLEFLOW_STATE_DIR": str(tmp_path / "state"),
            "BENTOML_HOME": str(tmp_path / "bentoml"),
        },
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
