"""Options that several commands take, each defined once (``Annotated`` types).

A command declares ``max_batch: MaxBatch = 0``; :func:`writer_overrides` turns the writer
options into :class:`jobs.writers.config.WriterConfig` overrides (0 / "" = the setting's).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from jobs.cli.common import Target

# ------------------------------------------------------------------------ the writers
GroupId = Annotated[str, typer.Option(help="consumer group (default: the writer's setting)")]
FromBeginning = Annotated[
    bool,
    typer.Option("--from-beginning", help="re-read the topics from their first offsets (replay)"),
]
MaxBatch = Annotated[int, typer.Option(min=0, help="max messages per batch (0 = from settings)")]
MaxWaitMs = Annotated[int, typer.Option(min=0, help="max wait to fill a batch (0 = settings)")]
Once = Annotated[bool, typer.Option("--once", help="write one non-empty batch, then stop")]
UntilIdle = Annotated[
    float,
    typer.Option("--until-idle", help="stop after S seconds without messages (0 = run forever)"),
]
RetryTimeout = Annotated[
    float, typer.Option(help="give up on an unreachable store after S seconds (0 = retry forever)")
]
LogEvery = Annotated[float, typer.Option(help="progress log interval, seconds")]


def writer_overrides(
    group_id: str,
    from_beginning: bool,
    max_batch: int,
    max_wait_ms: int,
    once: bool,
    until_idle: float,
    retry_timeout: float,
    log_every: float,
) -> dict[str, Any]:
    """The writer options as ``WriterConfig.from_settings`` overrides (None = setting)."""
    return {
        "group_id": group_id or None,
        "from_beginning": from_beginning,
        "max_batch": max_batch or None,
        "max_wait_ms": max_wait_ms or None,
        "once": once,
        "until_idle_s": until_idle,
        "retry_timeout_s": retry_timeout,
        "log_every_s": log_every,
    }


# ----------------------------------------------------------------------- the Flink jobs
TargetOpt = Annotated[
    Target, typer.Option(help="local: in-process MiniCluster; cluster: `flink run -py`")
]
EndOffsets = Annotated[str, typer.Option(help="bounded replay: stop at e.g. '0:115993'")]
StartOffsets = Annotated[str, typer.Option(help="start at e.g. '0:0' instead of earliest")]
Detach = Annotated[bool, typer.Option(help="submit and return (cluster target)")]
FromSavepoint = Annotated[
    str,
    typer.Option(
        help="resume from a savepoint / retained checkpoint (`candleflow flink savepoint`)"
    ),
]
