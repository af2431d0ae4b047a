"""The one launcher of the prediction service: ``bentoml serve`` of bentos/predictor.

``predictor_env`` is how settings reach the service (``CANDLEFLOW_*`` variables, secrets
included, plus ``BENTOML_HOME``); ``start_predictor`` starts it in its own process group on
loopback and waits until ``/readyz`` answers 200; ``PredictorProcess.stop`` stops the whole
process tree (infra/procs.py), so no worker is left holding the port. The backtest, the
serving benchmark, the tests and ``candleflow serve`` all start it this way.

``backtest_serving`` finds what a backtest run served (its model store, Feast project and
last model), so ``candleflow serve --backtest last`` serves the model of the last
``make demo`` / ``candleflow backtest``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import typer

from infra.settings import REPO_ROOT, Settings, settings_env

TARGET = "bentos.predictor.service:Predictor"


def predictor_env(
    settings: Settings, *, bentoml_home: Path | None = None, model_tag: str | None = None
) -> dict[str, str]:
    """The process environment of a service that sees ``settings`` (and, if given, that
    BentoML store and model)."""
    env = os.environ | settings_env(settings) | {"BENTOML_DO_NOT_TRACK": "true"}
    if bentoml_home is not None:
        env["BENTOML_HOME"] = str(bentoml_home)
    if model_tag:
        env["CANDLEFLOW_SERVING_MODEL_TAG"] = model_tag
    return env


def serve_command(
    host: str, port: int, *, target: str = TARGET, extra: list[str] | None = None
) -> list[str]:
    """``python -m bentoml serve TARGET --host H --port P`` with this interpreter (the venv's
    ``bentoml`` need not be on the PATH)."""
    return [
        sys.executable, "-m", "bentoml", "serve", target, "--host", host, "--port", str(port),
        *(extra or []),
    ]  # fmt: skip


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/readyz", timeout=2) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@dataclass
class PredictorProcess:
    proc: subprocess.Popen[bytes]
    url: str
    port: int
    log_path: Path
    log: IO[bytes]
    started_s: float

    def stop(self, grace_s: float = 15) -> None:
        """SIGTERM to the process group, then SIGKILL to whatever of its tree is left."""
        from infra.procs import stop_tree

        stop_tree(self.proc, grace_s)
        self.log.close()


def start_predictor(
    env: dict[str, str],
    log_path: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    target: str = TARGET,
    cwd: Path = REPO_ROOT,
    extra_args: list[str] | None = None,
    timeout_s: float = 120,
) -> PredictorProcess:
    """Start ``bentoml serve`` (a free port unless given) and wait until it is ready; a
    process that exits or is not ready in ``timeout_s`` raises with its log's tail."""
    from infra.local import free_port

    port = port or free_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115
    t0 = time.monotonic()
    proc = subprocess.Popen(
        serve_command(host, port, target=target, extra=extra_args),
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://{host}:{port}"
    p = PredictorProcess(proc, url, port, log_path, log, 0.0)
    while not _ready(url):
        why = None
        if proc.poll() is not None:
            why = f"bentoml serve exited ({proc.returncode})"
        elif time.monotonic() - t0 > timeout_s:
            why = f"bentoml serve not ready after {timeout_s:.0f} s"
        if why:
            p.stop(5)
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{why}; log {log_path}:\n{tail}")
        time.sleep(0.3)
    p.started_s = time.monotonic() - t0
    return p


@contextmanager
def serve_predictor(env: dict[str, str], log_path: Path, **kw: Any) -> Iterator[PredictorProcess]:
    """:func:`start_predictor`, stopped on exit."""
    p = start_predictor(env, log_path, **kw)
    try:
        yield p
    finally:
        p.stop()


# ------------------------------------------------------------------ a backtest's model
@dataclass
class BacktestServing:
    run_id: str
    run_dir: Path
    model_tag: str
    settings: Settings  # the run's Feast project and folder


def backtest_serving(settings: Settings, which: str = "last") -> BacktestServing:
    """What backtest ``which`` (a run id, or ``last``: the newest under
    ``STATE_DIR/backtests``) served: its models are in the BentoML store of the process that
    ran it (``$BENTOML_HOME``, default ``~/bentoml``), its Feast project is the run id (the
    online features stay in Redis), and its last walk-forward model is the one to serve."""
    root = settings.state_dir / "backtests"
    runs = sorted(p.parent for p in root.glob("*/report.json"))
    if (Path(which) / "report.json").exists():  # a run folder
        run_dir = Path(which)
    elif which == "last":
        if not runs:
            raise LookupError(f"no backtest under {root}: run `make demo` or `candleflow backtest`")
        run_dir = max(runs, key=lambda p: (p / "report.json").stat().st_mtime)
    else:
        run_dir = root / which
        if not (run_dir / "report.json").exists():
            have = [p.name for p in runs]
            raise LookupError(f"no backtest {which!r} under {root} (have: {have})")
    report = json.loads((run_dir / "report.json").read_text())
    models = report.get("walk_forward", {}).get("models") or []
    if not models:
        raise LookupError(f"backtest {run_dir.name} trained no model")
    run_settings = settings.model_copy(
        update={"feast_project": report["run_id"], "feast_dir": run_dir / "feast"}
    )
    return BacktestServing(report["run_id"], run_dir, str(models[-1]["tag"]), run_settings)


# ------------------------------------------------------------------------- the command
def serve_cmd(
    backtest: str = typer.Option(
        None,
        "--backtest",
        help="serve the last model of this backtest: `last` (the newest, e.g. of `make demo`), "
        "a run id, or a run folder",
    ),
    model: str = typer.Option(
        None, help="model tag (default: the backtest's, else CANDLEFLOW_SERVING_MODEL_TAG)"
    ),
    host: str = typer.Option(None, help="bind address (default SERVING_HOST, 127.0.0.1)"),
    port: int = typer.Option(None, help="port (default SERVING_PORT, 3000)"),
) -> None:
    """Run the prediction service in the foreground (`bentoml serve
    bentos.predictor.service:Predictor` with the venv's Python); Ctrl-C stops it."""
    from infra.settings import get_settings

    s = get_settings()
    tag = model
    if backtest:
        try:
            b = backtest_serving(s, backtest)
        except LookupError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2) from e
        s, tag = b.settings, model or b.model_tag
    cmd = serve_command(host or s.serving_host, port or s.serving_port)
    typer.echo(
        f"serving {tag or s.serving_tag} (Feast project {s.feast_project}) on "
        f"http://{host or s.serving_host}:{port or s.serving_port} (docs at /docs); Ctrl-C stops",
        err=True,
    )
    os.chdir(REPO_ROOT)
    os.execvpe(cmd[0], cmd, predictor_env(s, model_tag=tag))
