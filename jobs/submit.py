"""``candleflow submit JOB``: one entry point for the Flink jobs, wherever they run.

A thin dispatcher over ``candleflow candles|features|strategy run``: it puts the
submit-only settings into the environment (``CANDLEFLOW_FLINK_JOBMANAGER`` for
``--jobmanager``, ``--set`` overrides, the ``--compose`` preset) and invokes that command,
so the ``flink run -py`` command line is still built by :meth:`FlinkCluster.run_py` and the
in-process path by the job file's ``main``. Options it does not know (``--end-offsets``,
``--detach``, ``--from-savepoint`` ...) are passed on to the job command unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum

import typer

JOBS = ("candles", "features", "strategy")

# python of the project venv in infra/docker/flink.Dockerfile (UDF workers on the TMs)
IMAGE_PYTHON = "/opt/venv/bin/python"
# mount point of the `flink-data` volume shared by the JobManager and TaskManagers
FLINK_DATA = "/flink-data"

# What a job submitted from the host to the docker-compose cluster must see: the services'
# in-network names (the TaskManagers connect to them, not this machine), the image's
# python, checkpoints on the shared volume. tests/unit/test_compose.py checks these
# against docker-compose.yml.
COMPOSE_JOB_SETTINGS: dict[str, str] = {
    "kafka_bootstrap": "kafka:9092",
    "redis_host": "redis",
    "redis_port": "6379",
    "predictor_url": "http://predictor:3000",
    "flink_python_executable": IMAGE_PYTHON,
    "checkpoint_dir": f"{FLINK_DATA}/checkpoints",
    "savepoint_dir": f"{FLINK_DATA}/savepoints",
}


class Job(StrEnum):
    candles = "candles"
    features = "features"
    strategy = "strategy"


class SubmitTarget(StrEnum):
    local = "local"
    cluster = "cluster"


def parse_sets(items: list[str]) -> dict[str, str]:
    """``["kafka_bootstrap=kafka:9092", ...]`` -> settings overrides; keys must be fields
    of :class:`infra.settings.Settings` (with or without the ``CANDLEFLOW_`` prefix)."""
    from infra.settings import Settings

    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lower().removeprefix("candleflow_")
        if not sep or not key:
            raise ValueError(f"--set wants KEY=VALUE, got {item!r}")
        if key not in Settings.model_fields:
            raise ValueError(f"--set {key}: not a setting (see infra/settings.py)")
        out[key] = value
    return out


def submit_overrides(
    target: SubmitTarget, jobmanager: str, compose: bool, sets: list[str]
) -> dict[str, str]:
    """The settings this submission changes (lowercase field names)."""
    if target is SubmitTarget.local and (jobmanager or compose):
        raise ValueError("--jobmanager/--compose need --target cluster")
    out = dict(COMPOSE_JOB_SETTINGS) if compose else {}
    if jobmanager:
        host, _, port = jobmanager.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--jobmanager wants HOST:PORT, got {jobmanager!r}")
        out["flink_jobmanager"] = jobmanager
    return out | parse_sets(sets)


@contextmanager
def settings_env(overrides: dict[str, str]) -> Iterator[None]:
    """``CANDLEFLOW_<KEY>=value`` for the duration; the cached settings are rebuilt."""
    from infra.settings import get_settings

    keys = {f"CANDLEFLOW_{k.upper()}": v for k, v in overrides.items()}
    old = {k: os.environ.get(k) for k in keys}
    os.environ.update(keys)
    get_settings.cache_clear()
    try:
        get_settings()  # validate now: a bad --set fails before anything starts
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        get_settings.cache_clear()


def ensure_client_conf() -> None:
    """`flink run` needs a FLINK_CONF_DIR; against a remote JobManager no local cluster
    may ever have written one (FlinkCluster.start does)."""
    from infra.flink_cluster import FlinkCluster
    from infra.settings import get_settings

    cluster = FlinkCluster(get_settings())
    if not (cluster.conf_dir / "config.yaml").exists():
        cluster.write_conf()


def job_argv(job: Job, target: SubmitTarget, extra: list[str]) -> list[str]:
    """The ``candleflow`` command line this submission runs."""
    return [job.value, "run", "--target", target.value, *extra]


def run_job_command(argv: list[str]) -> int:
    """Invoke ``candleflow ARGV`` in this process; returns its exit code."""
    import typer.main

    from jobs.cli import app

    command = typer.main.get_command(app)
    rc = command.main(args=argv, prog_name="candleflow", standalone_mode=False)
    return rc if isinstance(rc, int) else 0


def submit(
    ctx: typer.Context,
    job: Job = typer.Argument(..., help="which Flink job: candles, features or strategy"),
    target: SubmitTarget = typer.Option(
        SubmitTarget.local, help="local: in-process MiniCluster; cluster: `flink run -py`"
    ),
    jobmanager: str = typer.Option(
        "",
        "--jobmanager",
        "-m",
        help="HOST:PORT of a remote JobManager's REST (e.g. docker compose: 127.0.0.1:8081); "
        "default: the local standalone cluster (`candleflow flink start`)",
    ),
    compose: bool = typer.Option(
        False,
        "--compose",
        help="the job runs in the docker-compose stack: in-network kafka:9092, redis, "
        f"predictor:3000, the image's {IMAGE_PYTHON}, checkpoints in {FLINK_DATA}",
    ),
    sets: list[str] = typer.Option(
        [], "--set", help="override a setting for this job, KEY=VALUE (repeatable)"
    ),
) -> None:
    """Submit a Flink job locally or to a cluster (dispatches to `candleflow JOB run`).

    candleflow submit candles                    # in-process MiniCluster
    candleflow submit candles --target cluster   # local standalone cluster
    candleflow submit features --target cluster -m 127.0.0.1:8081 --compose
    docker compose exec jobmanager candleflow submit strategy --target cluster

    --jobmanager is `flink run -m HOST:PORT` (CANDLEFLOW_FLINK_JOBMANAGER).
    A job submitted from here to the compose cluster is planned here and runs
    in the containers: --compose gives it the in-network service addresses.
    Other options (--end-offsets, --start-offsets, --detach, --from-savepoint)
    go to `candleflow JOB run` unchanged.
    """
    from jobs.cli import console

    try:
        overrides = submit_overrides(target, jobmanager, compose, sets)
    except ValueError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    argv = job_argv(job, target, list(ctx.args))
    if overrides:
        console.print("job settings: " + ", ".join(f"{k}={v}" for k, v in overrides.items()))
    try:
        with settings_env(overrides):
            if target is SubmitTarget.cluster:
                ensure_client_conf()
            rc = run_job_command(argv)
    except ValueError as e:  # pydantic ValidationError of a bad --set value
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    raise typer.Exit(rc)


# how jobs/cli.py registers it: unknown options are the job command's
CONTEXT_SETTINGS = {"allow_extra_args": True, "ignore_unknown_options": True}
