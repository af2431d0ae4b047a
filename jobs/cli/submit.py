"""``candleflow submit JOB``: one entry point for the Flink jobs, wherever they run.

The same job as ``candleflow candles|features|strategy run`` (:func:`jobs.cli.flink.run_job`)
with submit-only settings: ``--jobmanager`` (``CANDLEFLOW_FLINK_JOBMANAGER``), ``--set``
overrides and the ``--compose`` preset. They make one validated :class:`Settings` object that
``run_job`` hands to the in-process job, or to ``flink run -py`` as ``CANDLEFLOW_*``
variables (:func:`infra.settings.settings_env`, the one way settings cross a process).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from jobs.cli.common import Target
from jobs.cli.flink import Job, run_job
from jobs.cli.options import Detach, EndOffsets, FromSavepoint, StartOffsets, TargetOpt

if TYPE_CHECKING:
    from infra.settings import Settings

# python of the project venv in infra/docker/flink.Dockerfile (UDF workers on the TMs)
IMAGE_PYTHON = "/opt/venv/bin/python"
# mount point of the `flink-data` volume shared by the JobManager and TaskManagers
FLINK_DATA = "/flink-data"

# What a job submitted from the host to the docker-compose cluster must see: the services'
# in-network names (the TaskManagers connect to them, not this machine), the image's
# python, checkpoints on the shared volume. tests/unit/infra/test_compose.py checks these
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
    target: Target, jobmanager: str, compose: bool, sets: list[str]
) -> dict[str, str]:
    """The settings this submission changes (lowercase field names)."""
    if target is Target.local and (jobmanager or compose):
        raise ValueError("--jobmanager/--compose need --target cluster")
    out = dict(COMPOSE_JOB_SETTINGS) if compose else {}
    if jobmanager:
        host, _, port = jobmanager.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"--jobmanager wants HOST:PORT, got {jobmanager!r}")
        out["flink_jobmanager"] = jobmanager
    return out | parse_sets(sets)


def submit_settings(overrides: dict[str, str]) -> Settings:
    """The settings of this submission: environment and ``.env`` as usual, ``overrides``
    on top, validated now (a bad ``--set`` value fails before anything starts)."""
    from infra.settings import Settings

    return Settings(**overrides)  # type: ignore[arg-type]  # strings, validated by pydantic


def submit(
    job: Job = typer.Argument(..., help="which Flink job: candles, features or strategy"),
    target: TargetOpt = Target.local,
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
    end_offsets: EndOffsets = "",
    start_offsets: StartOffsets = "",
    detach: Detach = False,
    from_savepoint: FromSavepoint = "",
) -> None:
    """Submit a Flink job locally or to a cluster (the job of `candleflow JOB run`).

    candleflow submit candles                    # in-process MiniCluster
    candleflow submit candles --target cluster   # local standalone cluster
    candleflow submit features --target cluster -m 127.0.0.1:8081 --compose
    docker compose exec jobmanager candleflow submit strategy --target cluster

    --jobmanager is `flink run -m HOST:PORT` (CANDLEFLOW_FLINK_JOBMANAGER).
    A job submitted from here to the compose cluster is planned here and runs
    in the containers: --compose gives it the in-network service addresses.
    """
    from jobs.cli.common import console

    try:
        overrides = submit_overrides(target, jobmanager, compose, sets)
        settings = submit_settings(overrides)
    except ValueError as e:  # incl. pydantic's ValidationError of a bad --set value
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    if overrides:
        console.print("job settings: " + ", ".join(f"{k}={v}" for k, v in overrides.items()))
    raise typer.Exit(
        run_job(job, target, end_offsets, start_offsets, detach, from_savepoint, settings)
    )
