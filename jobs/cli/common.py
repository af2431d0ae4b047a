"""What every command module of the CLI shares: the console, the enums, failing with a
message, a writer's stop on a broker reset, the progress bar."""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import StrEnum
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

console = Console(stderr=True)

T = TypeVar("T")


class Target(StrEnum):
    local = "local"
    cluster = "cluster"


class Exchange(StrEnum):
    binance = "binance"
    kraken = "kraken"
    coinbase = "coinbase"


def fail(msg: str) -> NoReturn:
    console.print(f"[red]error:[/red] {msg}")
    raise typer.Exit(1)


def until_broker_reset(run: Callable[..., T], *args: Any) -> T:
    """Run a writer; a broker that lost its data (:class:`infra.kafka.BrokerReset`)
    ends the command with its message and exit 1."""
    from infra.kafka import BrokerReset

    try:
        return run(*args)
    except BrokerReset as e:
        fail(str(e))


def progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not sys.stderr.isatty(),
    )
