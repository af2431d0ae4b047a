"""``candleflow candles|features|strategy run`` and ``candleflow flink ...``: the Flink jobs
and the standalone cluster."""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path

import typer
from rich.table import Table

from infra.settings import Settings, get_settings
from jobs.cli.common import Target, console, fail
from jobs.cli.options import Detach, EndOffsets, FromSavepoint, StartOffsets, TargetOpt


class Job(StrEnum):
    candles = "candles"
    features = "features"
    strategy = "strategy"


def candles_run(
    target: TargetOpt = Target.local,
    end_offsets: EndOffsets = "",
    start_offsets: StartOffsets = "",
    detach: Detach = False,
    from_savepoint: FromSavepoint = "",
) -> None:
    """Run the candles job: trades -> 1m/5m/15m/1h candles, DLQ and late trades.

    Checkpointed every CANDLEFLOW_CHECKPOINT_INTERVAL_MS (state: offsets + open windows); a
    failed task restarts from the last checkpoint. Stop with a savepoint: `candleflow flink
    savepoint JOB --stop`; resume: `--from-savepoint PATH`.
    """
    raise typer.Exit(
        run_job(Job.candles, target, end_offsets, start_offsets, detach, from_savepoint)
    )


def features_run(
    target: TargetOpt = Target.local,
    end_offsets: EndOffsets = "",
    start_offsets: StartOffsets = "",
    detach: Detach = False,
    from_savepoint: FromSavepoint = "",
) -> None:
    """Run the features job: candles -> 30 TA-Lib features per symbol/timeframe -> `features`."""
    raise typer.Exit(
        run_job(Job.features, target, end_offsets, start_offsets, detach, from_savepoint)
    )


def strategy_run(
    target: TargetOpt = Target.local,
    end_offsets: EndOffsets = "",
    start_offsets: StartOffsets = "",
    detach: Detach = False,
    from_savepoint: FromSavepoint = "",
) -> None:
    """Run the strategy job: features -> predictions (CANDLEFLOW_PREDICTOR_URL /score) ->
    strategy + paper broker -> `predictions`, `orders`, `fills`, `equity`.

    The predictor must serve /score; while it is down, predictions come out `degraded`
    and the strategy makes no entries (stops and the kill-switch still apply).
    """
    raise typer.Exit(
        run_job(Job.strategy, target, end_offsets, start_offsets, detach, from_savepoint)
    )


def run_job(
    job: Job,
    target: Target,
    end_offsets: str = "",
    start_offsets: str = "",
    detach: bool = False,
    from_savepoint: str = "",
    settings: Settings | None = None,
) -> int:
    """Same job file either way: in-process MiniCluster (``main(argv, settings)``), or
    ``flink run -py`` on the cluster, whose job process gets ``settings`` as
    ``CANDLEFLOW_*`` variables (:func:`infra.settings.settings_env`). Returns the exit code."""
    import importlib

    s = settings or get_settings()
    args = []
    if end_offsets:
        args += ["--end-offsets", end_offsets]
    if start_offsets:
        args += ["--start-offsets", start_offsets]
    if target is Target.cluster:
        from infra.flink_cluster import FlinkCluster

        script = Path(__file__).parents[1] / "flink" / f"{job.value}.py"
        cluster = FlinkCluster(s)
        cluster.ensure_client_conf()
        return cluster.run_py(script, args, detach=detach, from_savepoint=from_savepoint or None)
    extra = (["--detach"] if detach else []) + (
        ["--from-savepoint", from_savepoint] if from_savepoint else []
    )
    importlib.import_module(f"jobs.flink.{job.value}").main(args + extra, settings=s)
    return 0


def flink_start(
    taskmanagers: int = typer.Option(0, help="TaskManager processes (default from settings)"),
) -> None:
    """Start a standalone session cluster (JobManager + TaskManagers) on loopback."""
    from infra.flink_cluster import FlinkCluster

    s: Settings = get_settings()
    if taskmanagers:
        s = s.model_copy(update={"flink_taskmanagers": taskmanagers})
    console.print(FlinkCluster(s).start())


def flink_stop() -> None:
    """Stop the standalone cluster."""
    from infra.flink_cluster import FlinkCluster

    console.print(FlinkCluster(get_settings()).stop())


def flink_status() -> None:
    """Cluster overview and jobs, from the REST API."""
    from infra.flink_cluster import FlinkCluster

    console.print(FlinkCluster(get_settings()).status())


def _cluster_or_fail():  # -> FlinkCluster
    from infra.flink_cluster import FlinkCluster

    c = FlinkCluster(get_settings())
    if c.overview() is None:
        fail(f"no Flink cluster at {c.rest_url} (`candleflow flink start`)")
    return c


def flink_jobs() -> None:
    """Jobs on the cluster with their state and checkpoints (latest completed path)."""
    c = _cluster_or_fail()
    t = Table("job id", "name", "state", "started", "checkpoints", "latest checkpoint")
    for j in c.jobs():
        try:
            cp = c.checkpoints(j["jid"])
            cps = f"{cp['completed']} done, {cp['failed']} failed, {cp['restored']} restored"
            latest = cp["latest_path"] or "-"
        except Exception:  # e.g. a finished job's checkpoint stats expired
            cps, latest = "-", "-"
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(j["start-time"] / 1000))
        t.add_row(j["jid"], j["name"], j["state"], started, cps, latest)
    console.print(t)


def flink_savepoint(
    job: str = typer.Argument(..., help="job id or name (e.g. candleflow-candles)"),
    stop: bool = typer.Option(False, "--stop", help="stop the job with the savepoint"),
    drain: bool = typer.Option(
        False,
        "--drain",
        help="stop, first firing every open window (ends a resumed bounded replay, which "
        "Kafka connector bug FLINK-31006 keeps from finishing by itself)",
    ),
    target: Path = typer.Option(None, help="savepoint folder (default CANDLEFLOW_SAVEPOINT_DIR)"),
) -> None:
    """Take a savepoint of a running job (`--stop`: stop-with-savepoint). Resume with
    `candleflow candles|features run --target cluster --from-savepoint PATH`."""
    c = _cluster_or_fail()
    try:
        j = c.find_job(job)
        if j["state"] != "RUNNING":
            fail(f"job {j['name']} ({j['jid']}) is {j['state']}, not RUNNING")
        path = c.savepoint(j["jid"], stop=stop, drain=drain, target=target)
    except (LookupError, RuntimeError, TimeoutError) as e:
        fail(str(e))
        return
    stopped = "drained and stopped " if drain else "stopped " if stop else ""
    console.print(f"{stopped}{j['name']} ({j['jid']}): savepoint {path}")
    console.print(
        f"resume: candleflow {j['name'].removeprefix('candleflow-')} run --target cluster "
        f"--from-savepoint {path}"
    )


def flink_cancel(job: str = typer.Argument(..., help="job id or name")) -> None:
    """Cancel a running job (its last checkpoint is retained for `--from-savepoint`)."""
    c = _cluster_or_fail()
    try:
        j = c.find_job(job)
        cp = c.checkpoints(j["jid"])
        c.cancel(j["jid"])
    except LookupError as e:
        fail(str(e))
        return
    console.print(f"cancelled {j['name']} ({j['jid']}); last checkpoint: {cp['latest_path']}")
