"""The one launcher of the prediction service: ``bentoml serve`` of bentos/predictor.

``predictor_env`` is how settings reach the service (``CANDLEFLOW_*`` variables, secrets
included, plus ``BENTOML_HOME`` and any extra variables); ``start_predictor`` /
``serve_predictor`` (a context manager) start it in its own process group on loopback (a free
port unless given) and wait until BentoML's own client (``bentoml.SyncHTTPClient.is_ready``)
finds it ready, failing fast with the log's tail if the process exits;
``PredictorProcess.stop`` stops the whole process tree (infra/procs.py), so no worker is left
holding the port. The backtest, the serving benchmark (bench/serving.py) and the tests
(tests/integration/bentos/predictor_fixtures.py) all start it this way; ``candleflow serve``
runs the same ``serve_command`` in the foreground.

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
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import typer

from infra.settings import REPO_ROOT, Settings, settings_env

TARGET = "bentos.predictor.service:Predictor"


def predictor_env(
    settings: Settings,
    *,
    bentoml_home: Path | None = None,
    model_tag: str | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The process environment of a service that sees ``settings`` (this process's
    environment, then the settings as ``CANDLEFLOW_*``), and, if given, that BentoML store
    (``BENTOML_HOME``), that model, and ``extra`` variables last (e.g.
    ``BENTOML_CONFIG_OPTIONS``)."""
    env = os.environ | settings_env(settings) | {"BENTOML_DO_NOT_TRACK": "true"}
    if bentoml_home is not None:
        env["BENTOML_HOME"] = str(bentoml_home)
    if model_tag:
        env["CANDLEFLOW_SERVING_MODEL_TAG"] = model_tag
    return env | dict(extra or {})


def serve_command(
    host: str, port: int, *, target: str = TARGET, extra: list[str] | None = None
) -> list[str]:
    """``python -m bentoml serve TARGET --host H --port P`` with this interpreter (the venv's
    ``bentoml`` need not be on the PATH)."""
    return [
        sys.executable, "-m", "bentoml", "serve", target, "--host", host, "--port", str(port),
        *(extra or []),
    ]  # fmt: skip


class PredictorStartError(RuntimeError):
    """``bentoml serve`` exited, or was not ready in time (the message ends with its log's
    tail)."""


# Readiness is BentoML's own client's check (``bentoml.SyncHTTPClient.is_ready``: a GET of the
# service's readyz endpoint, i.e. our ``__is_ready__``), called in a tenacity loop of our own
# rather than through the client's ``wait_until_server_ready``. In bentoml 1.4.39 that wait
# (which the client's constructor runs unless ``server_ready_timeout=0``) re-requests /readyz
# with no sleep at all, a busy loop while the port refuses or answers 503 (the legacy
# ``bentoml.client.SyncHTTPClient`` one sleeps only after a non-200 answer), and neither can
# see our process: a server that exits at start (a bad model, a port in use) would be waited
# for until the timeout. The constructor also GETs /schema.json, which fails until the server
# listens, so the client is built inside the loop (once); a connection error or a failed
# schema fetch counts as "not ready yet", and every attempt first checks that the process is
# alive, so an exit fails within one poll, with the log's tail.
_POLL_S = 0.3


def _log_tail(log_path: Path | None, n: int = 3000) -> str:
    if log_path is None or not log_path.exists():
        return ""
    return f"; log {log_path}:\n" + log_path.read_text(errors="replace")[-n:]


def wait_ready(
    proc: subprocess.Popen[bytes],
    url: str,
    timeout_s: float = 120,
    log_path: Path | None = None,
    *,
    poll_s: float = _POLL_S,
) -> None:
    """Return once BentoML's client finds the service at ``url`` (served by ``proc``) ready;
    raise :class:`PredictorStartError` (with the tail of ``log_path``) as soon as ``proc``
    exits, or after ``timeout_s``. Does not stop ``proc``."""
    import bentoml
    import httpx
    from bentoml.exceptions import BentoMLException
    from tenacity import Retrying, retry_if_result, stop_after_delay, wait_fixed

    client: bentoml.SyncHTTPClient | None = None

    def probe() -> bool:
        nonlocal client
        if proc.poll() is not None:
            raise PredictorStartError(
                f"bentoml serve exited ({proc.returncode}) before {url} was ready"
                + _log_tail(log_path)
            )
        try:
            if client is None:
                client = bentoml.SyncHTTPClient(url, server_ready_timeout=0, timeout=5)
            return client.is_ready(timeout=2)
        except (httpx.TransportError, BentoMLException):
            return False

    retrying = Retrying(
        stop=stop_after_delay(timeout_s),
        wait=wait_fixed(poll_s),
        retry=retry_if_result(lambda ready: not ready),  # an exception (exited) is not retried
        retry_error_callback=lambda _: False,
    )
    try:
        if not retrying(probe):
            raise PredictorStartError(
                f"bentoml serve not ready at {url} after {timeout_s:.0f} s" + _log_tail(log_path)
            )
    finally:
        if client is not None:
            client.close()


@dataclass
class PredictorProcess:
    proc: subprocess.Popen[bytes]
    url: str
    host: str
    port: int
    log_path: Path
    log: IO[bytes]
    started_s: float  # seconds from the start to ready

    def stop(self, grace_s: float = 15) -> None:
        """SIGTERM to the process group, then SIGKILL to whatever of its tree is left."""
        from infra.procs import stop_tree

        stop_tree(self.proc, grace_s)
        if not self.log.closed:
            self.log.close()


def start_predictor(
    env: Mapping[str, str],
    log_path: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    target: str = TARGET,
    cwd: Path = REPO_ROOT,
    extra_args: list[str] | None = None,
    timeout_s: float = 120,
) -> PredictorProcess:
    """Start ``bentoml serve TARGET`` (default: bentos/predictor from the repo root; a built
    bento's ``NAME:VERSION`` works too) in its own process group, with exactly ``env`` (see
    :func:`predictor_env`), on ``host``:``port`` (a free port unless given), its output
    appended to ``log_path``; wait until it is ready (:func:`wait_ready`). A process that
    exits, or is not ready in ``timeout_s``, is stopped and raises
    :class:`PredictorStartError` with its log's tail."""
    from infra.local import free_port

    port = port or free_port()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115
    t0 = time.monotonic()
    proc = subprocess.Popen(
        serve_command(host, port, target=target, extra=extra_args),
        cwd=cwd,
        env=dict(env),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://{host}:{port}"
    p = PredictorProcess(proc, url, host, port, log_path, log, 0.0)
    try:
        wait_ready(proc, url, timeout_s, log_path)
    except BaseException:  # not ready, exited, or Ctrl-C while waiting: leave nothing behind
        p.stop(5)
        raise
    p.started_s = time.monotonic() - t0
    return p


@contextmanager
def serve_predictor(
    env: Mapping[str, str],
    log_path: Path,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    target: str = TARGET,
    cwd: Path = REPO_ROOT,
    extra_args: list[str] | None = None,
    timeout_s: float = 120,
    stop_grace_s: float = 15,
) -> Iterator[PredictorProcess]:
    """:func:`start_predictor` (same arguments), its process tree stopped on exit (SIGKILL
    for what is left ``stop_grace_s`` after the SIGTERM)."""
    p = start_predictor(
        env,
        log_path,
        host=host,
        port=port,
        target=target,
        cwd=cwd,
        extra_args=extra_args,
        timeout_s=timeout_s,
    )
    try:
        yield p
    finally:
        p.stop(stop_grace_s)


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
