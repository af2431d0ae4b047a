"""``candleflow ingest replay|live``: put trades on the `trades` topic."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, NoReturn

import typer

from infra.settings import get_settings
from jobs.cli.common import Exchange, console, progress


def ingest_replay(
    file: Path = typer.Argument(
        ..., exists=True, dir_okay=False, help="parquet / trades.json(.gz) / jsonl(.gz) / csv(.gz)"
    ),
    speed: str = typer.Option("max", help="'max' or a multiple of real time, e.g. 10"),
    max_gap_s: float = typer.Option(
        60.0, help="shorten event-time gaps longer than this when pacing"
    ),
    limit: int = typer.Option(0, min=0, help="stop after N rows per pass (0 = all)"),
    repeat: int = typer.Option(
        1, min=1, help="replay the file N times, shifting time forward each pass"
    ),
    broker_timeout_s: float = typer.Option(
        60.0, min=1.0, help="give up on a send the broker does not take/acknowledge in this"
    ),
) -> None:
    """Replay recorded trades into `trades`; every bad row goes to `trades_dlq` with its reason
    and line number (source_topic 'file:NAME', source_offset LINE), and the run ends with the
    counts. Exit 0: all rows sent or dead-lettered; 1: broker failed; 2: unusable file (e.g. a
    CSV header without the required columns; nothing sent); 130: interrupted."""
    from rich.markup import escape

    from jobs.ingest.replay import (
        DETECTED_BY,
        FileError,
        IngestStats,
        Pacer,
        ReplayReport,
        TradeFile,
        TradeSink,
        replay,
    )

    s = get_settings()
    try:
        pace = None if speed == "max" else float(speed)
    except ValueError:
        pace = -1.0
    if pace is not None and not 0 < pace < float("inf"):
        console.print(f"[red]error:[/red] --speed must be 'max' or a number > 0, got {speed!r}")
        raise typer.Exit(2)
    try:
        source = TradeFile.open(file)
    except FileError as e:
        console.print(f"[red]error:[/red] {escape(str(e))}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
    timeout_ms = int(broker_timeout_s * 1000)
    try:
        sink = TradeSink.for_settings(
            s,
            detected_by=DETECTED_BY,
            max_block_ms=timeout_ms,
            delivery_timeout_ms=timeout_ms,
            request_timeout_ms=min(30_000, timeout_ms - 100),
        )
    except (Exception, KeyboardInterrupt) as e:  # no broker / Ctrl-C: nothing read or sent
        report = ReplayReport(file.name, repeat, IngestStats(), s.topic_trades, s.topic_trades_dlq)
        if isinstance(e, KeyboardInterrupt):
            report.outcome, report.detail = "interrupted", "Ctrl-C"
        else:
            report.outcome, report.detail = "broker failed", f"{s.kafka_bootstrap}: {e!r}"
        logging.getLogger(__name__).error("replay summary: %s", json.dumps(report.as_dict()))
        _print_replay_report(report)
    with progress() as prog:
        task = prog.add_task(f"replay {file.name}", total=(source.total or 0) * repeat or None)
        report = replay(
            source,
            sink,
            pacer=Pacer(pace, max_gap_ms=int(max_gap_s * 1000)),
            limit=limit,
            repeat=repeat,
            on_row=lambda: prog.advance(task),
            flush_timeout_s=broker_timeout_s + 5,
        )
    _print_replay_report(report)


def _print_replay_report(report: Any) -> NoReturn:  # a jobs.ingest.replay.ReplayReport
    for line in report.lines():
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(report.exit_code)


def ingest_live(
    exchange: Exchange = typer.Option(Exchange.binance, help="which exchange's websocket"),
    symbols: str = typer.Option("BTCUSDT,ETHUSDT", help="comma-separated, exchange spelling"),
    url: str = typer.Option("", help="override the websocket URL (e.g. a local test server)"),
    max_messages: int = typer.Option(0, help="stop after N trades (0 = run until Ctrl-C)"),
) -> None:
    """Stream live trades over websockets with reconnect + backoff and gap logging."""
    from jobs.ingest.live import run_live
    from jobs.ingest.replay import TradeSink

    sink = TradeSink.for_settings(get_settings(), detected_by="live")
    try:
        run_live(
            exchange.value,
            [x.strip() for x in symbols.split(",") if x.strip()],
            sink,
            url=url or None,
            max_messages=max_messages or None,
        )
    except KeyboardInterrupt:
        pass
    finally:
        sink.flush()
        console.print(f"sent {sink.stats.sent:,}, dead-lettered {sink.stats.dead_lettered:,}")
