"""``candleflow``: the command line for the whole pipeline (``candleflow --help``)."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from infra.settings import Settings, get_settings
from jobs.grafana import grafana_app
from jobs.serve import serve_cmd
from jobs.submit import CONTEXT_SETTINGS as SUBMIT_CONTEXT
from jobs.submit import submit as submit_cmd

console = Console(stderr=True)
app = typer.Typer(
    name="candleflow",
    help="Real-time crypto candles and features: Kafka -> Flink SQL -> Kafka.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
ingest_app = typer.Typer(
    help="Put trades on the `trades` topic (files or exchanges).", no_args_is_help=True
)
candles_app = typer.Typer(help="The candles Flink SQL job.", no_args_is_help=True)
features_app = typer.Typer(help="The indicator features Flink job.", no_args_is_help=True)
strategy_app = typer.Typer(
    help="The strategy Flink job: predictions, paper orders, fills, equity.", no_args_is_help=True
)
flink_app = typer.Typer(
    help="A standalone Flink cluster from the pyflink distribution.", no_args_is_help=True
)
app.add_typer(ingest_app, name="ingest")
app.add_typer(candles_app, name="candles")
app.add_typer(features_app, name="features")
app.add_typer(strategy_app, name="strategy")
app.add_typer(flink_app, name="flink")
clickhouse_app = typer.Typer(
    help="The ClickHouse analytics store (CANDLEFLOW_CLICKHOUSE_URL: server or chDB).",
    no_args_is_help=True,
)
app.add_typer(clickhouse_app, name="clickhouse")
feast_app = typer.Typer(
    help="The Feast feature store (feature_repo/): env for the feast CLI, apply.",
    no_args_is_help=True,
)
dataset_app = typer.Typer(
    help="Training sets: point-in-time features from Feast + labels.", no_args_is_help=True
)
app.add_typer(feast_app, name="feast")
app.add_typer(dataset_app, name="dataset")
app.add_typer(grafana_app, name="grafana")
app.command("submit", context_settings=SUBMIT_CONTEXT)(submit_cmd)  # jobs/submit.py
app.command("serve")(serve_cmd)  # jobs/serve.py


class Target(StrEnum):
    local = "local"
    cluster = "cluster"


class Exchange(StrEnum):
    binance = "binance"
    kraken = "kraken"
    coinbase = "coinbase"


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="debug logging")) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=console, show_path=False)],
    )
    for noisy in ("kafka", "py4j", "feast"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("apache_beam").setLevel(logging.ERROR)  # optional GCS/BigQuery imports


T = TypeVar("T")


def _fail(msg: str) -> NoReturn:
    console.print(f"[red]error:[/red] {msg}")
    raise typer.Exit(1)


def _until_broker_reset(run: Callable[..., T], *args: Any) -> T:
    """Run a writer; a broker that lost its data (:class:`jobs.kafka_writer.BrokerReset`)
    ends the command with its message and exit 1."""
    from jobs.kafka_writer import BrokerReset

    try:
        return run(*args)
    except BrokerReset as e:
        _fail(str(e))


# --------------------------------------------------------------------------- local stack
@app.command()
def up(
    clickhouse: bool = typer.Option(
        False, "--clickhouse", help="also start a local ClickHouse 18.16 server (apt package)"
    ),
) -> None:
    """Start the local broker (Tansu) and Redis on loopback; idempotent.

    Ports and the state folder come from settings (CANDLEFLOW_KAFKA_BOOTSTRAP,
    CANDLEFLOW_REDIS_PORT, CANDLEFLOW_STATE_DIR; CANDLEFLOW_CLICKHOUSE_PORT/_HTTP_PORT).
    The local broker keeps its topics in memory: a restart loses them (use a real Kafka,
    e.g. the compose stack, for data that must survive it).
    """
    from infra.kafka import ensure_topics
    from infra.local import ServiceError, clickhouse_service, local_stack

    s = get_settings()
    try:
        for svc in local_stack(s):
            console.print(svc.start())
        console.print(
            "[yellow]note:[/] the local broker keeps topics and committed offsets in memory; "
            "stopping it loses them (acknowledged but unconsumed messages too)"
        )
        if clickhouse:
            ch = clickhouse_service(s)
            console.print(ch.start())
            from infra.settings import mask_url

            url = mask_url(ch.url_for("candleflow"))  # the password stays out of the output
            console.print(f"use it: CANDLEFLOW_CLICKHOUSE_URL={url}")
    except ServiceError as e:
        _fail(str(e))
    ensure_topics(
        s.kafka_bootstrap,
        [
            s.topic_trades,
            s.topic_trades_dlq,
            s.topic_trades_late,
            s.topic_candles,
            s.topic_features,
            s.topic_features_dlq,
        ],
        partitions=s.topic_partitions,
    )
    console.print(f"state and logs: {s.state_dir}")


@app.command()
def down() -> None:
    """Stop the local broker and Redis (broker data is in memory and is lost), and the
    local ClickHouse server if it runs (its data stays in the state folder)."""
    from infra.local import clickhouse_service, local_stack

    ch = clickhouse_service(get_settings())
    if ch.pid():
        console.print(ch.stop())
    for svc in reversed(local_stack(get_settings())):
        console.print(svc.stop())


@app.command()
def status(
    as_json: bool = typer.Option(False, "--json", help="machine-readable output on stdout"),
    minutes: float = typer.Option(15.0, min=0.1, help="freshness window: last N minutes"),
) -> None:
    """Local services, topics + consumer-group lag, Flink cluster jobs, pipeline freshness.

    Every section says "not running"/"unreachable" when its service is down."""
    from infra.settings import redact
    from infra.status import collect, render

    settings = get_settings()
    # no password or token of the settings ever reaches the output, in a URL or an error
    report = json.loads(redact(json.dumps(collect(settings, minutes)), settings))
    if as_json:
        print(json.dumps(report, indent=2))
        return
    render(report, Console())


@app.command("install-jars")
def install_jars() -> None:
    """Fetch the Flink Kafka connector jars into CANDLEFLOW_JARS_DIR (from PyPI) and build the
    project's Java functions (udfs/java) and the loopback-bind fix (infra/java) there."""
    from infra.jars import ensure_jars, flink_lib_dir, loopback_jar, udf_jar

    jars_dir = get_settings().jars_dir
    for p in [*ensure_jars(jars_dir), udf_jar(jars_dir), loopback_jar(jars_dir)]:
        console.print(f"ok {p}")
    for p in [flink_lib_dir(jars_dir)]:
        console.print(f"ok {p}")


@app.command()
def demo(
    data: Path = typer.Option(
        None, help="trades file (default: the real Binance sample in ../shared/data)"
    ),
) -> None:
    """End to end on local services and real data: up -> replay real trades -> candles job;
    then a backtest on real 1m klines: features job -> feature writer (Feast + Redis +
    ClickHouse) -> walk-forward XGBoost -> bentoml serve -> strategy job -> trading writer
    -> report; a summary of where everything is. Then `candleflow serve --backtest last`."""
    from jobs.demo import run_demo

    s = get_settings()
    path = data or s.data_dir / "binance_trades_sample.parquet"
    if not path.exists():
        _fail(f"{path} not found; pass --data FILE")
    run_demo(s, path, console, _progress)


# ---------------------------------------------------------------------------- backtest
@app.command()
def backtest(
    data: Path = typer.Option(
        None, help="1m klines csv(.gz)/parquet (default: the real 2021 file in ../shared/data)"
    ),
    start: str = typer.Option("2021-04-20", help="first bar traded (UTC date/time)"),
    end: str = typer.Option("2021-04-22", help="end of the traded range (exclusive)"),
    symbols: str = typer.Option("", help="comma-separated (default: all in the file)"),
    history_days: float = typer.Option(7.0, min=0.5, help="training history before --start"),
    retrain_days: float = typer.Option(1.0, min=0.01, help="walk-forward: a new model every"),
    label: str = typer.Option("fwd_ret_5", help="training label fwd_ret_N"),
    rounds: int = typer.Option(150, min=1, help="max boosting rounds per model"),
    strategy_config: Path = typer.Option(
        None, exists=True, dir_okay=False, help="JSON StrategyConfig overrides (rules: md)"
    ),
    out_dir: Path = typer.Option(None, help="runs folder (default STATE_DIR/backtests)"),
) -> None:
    """Replay history through the SAME jobs (candles topic -> features job -> Feast +
    ClickHouse -> walk-forward models -> bentoml serve -> strategy job -> trading writer)
    and write a report: return, CAGR, Sharpe, Sortino, drawdown, win rate, turnover, fees,
    vs buy-and-hold, with equity and drawdown PNGs. Needs `candleflow up` (broker + Redis)."""
    import pandas as pd

    from infra.local import local_stack
    from jobs.backtest import BacktestConfig, run_backtest

    s = get_settings()
    for svc in local_stack(s):
        if not svc.healthy():
            console.print(svc.start())
    try:
        cfg = BacktestConfig(
            data=data or s.data_dir / "binance_1m_top5_2021.csv.gz",
            start=pd.Timestamp(start),
            end=pd.Timestamp(end),
            symbols=tuple(x.strip() for x in symbols.split(",") if x.strip()),
            history=pd.Timedelta(days=history_days),
            retrain_every=pd.Timedelta(days=retrain_days),
            label=label,
            rounds=rounds,
            strategy=json.loads(strategy_config.read_text()) if strategy_config else {},
            out_dir=out_dir,
        )
    except ValueError as e:
        _fail(str(e))
        return
    with _progress() as prog:
        tasks: dict[str, TaskID] = {}

        def advance(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = prog.add_task(stage, total=total)
            prog.update(tasks[stage], completed=done, total=total)

        try:
            res = run_backtest(s, cfg, on_stage=lambda m: console.rule(m), on_progress=advance)
        except (ValueError, FileNotFoundError) as e:
            _fail(str(e))
            return
    print_backtest(res.report, res.out_dir)


def print_backtest(report: dict[str, Any], out_dir: Path) -> None:
    m = report["metrics"]
    t = Table("metric", "strategy", "buy-and-hold", title=f"backtest {report['run_id']}")
    for name, a, b, fmt in (
        ("total return", "total_return", "bh_total_return", "{:.2%}"),
        ("CAGR", "cagr", "bh_cagr", "{:.2%}"),
        ("Sharpe", "sharpe", "bh_sharpe", "{:.2f}"),
        ("Sortino", "sortino", "bh_sortino", "{:.2f}"),
        ("max drawdown", "max_drawdown", "bh_max_drawdown", "{:.2%}"),
    ):
        t.add_row(
            name,
            "n/a" if m.get(a) is None else fmt.format(m[a]),
            "n/a" if m.get(b) is None else fmt.format(m[b]),
        )
    for name, key, fmt in (
        ("round trips", "round_trips", "{}"),
        ("win rate", "win_rate", "{:.1%}"),
        ("turnover", "turnover", "{:.2f}x"),
        ("fees paid", "fees_paid", "{:,.2f}"),
    ):
        t.add_row(name, "n/a" if m.get(key) is None else fmt.format(m[key]), "")
    Console().print(t)
    console.print(f"report: {out_dir / 'report.md'} (+ report.json, PNGs)")


# ------------------------------------------------------------------------------ ingest
@ingest_app.command("replay")
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
    with _progress() as prog:
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


@ingest_app.command("live")
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


# ----------------------------------------------------------------------------- candles
@candles_app.command("run")
def candles_run(
    target: Target = typer.Option(Target.local, help="local MiniCluster or the standalone cluster"),
    end_offsets: str = typer.Option("", help="bounded replay: stop at e.g. '0:115993'"),
    start_offsets: str = typer.Option("", help="start at e.g. '0:0' instead of earliest"),
    detach: bool = typer.Option(False, help="submit and return (cluster target)"),
    from_savepoint: str = typer.Option(
        "", help="resume from a savepoint / retained checkpoint (`candleflow flink savepoint`)"
    ),
) -> None:
    """Run the candles job: trades -> 1m/5m/15m/1h candles, DLQ and late trades.

    Checkpointed every CANDLEFLOW_CHECKPOINT_INTERVAL_MS (state: offsets + open windows); a
    failed task restarts from the last checkpoint. Stop with a savepoint: `candleflow flink
    savepoint JOB --stop`; resume: `--from-savepoint PATH`.
    """
    _run_job("candles", target, end_offsets, start_offsets, detach, from_savepoint)


@features_app.command("run")
def features_run(
    target: Target = typer.Option(Target.local, help="local MiniCluster or the standalone cluster"),
    end_offsets: str = typer.Option("", help="bounded replay of `candles`: stop at e.g. '0:157'"),
    start_offsets: str = typer.Option("", help="start at e.g. '0:0' instead of earliest"),
    detach: bool = typer.Option(False, help="submit and return"),
    from_savepoint: str = typer.Option(
        "", help="resume from a savepoint / retained checkpoint (`candleflow flink savepoint`)"
    ),
) -> None:
    """Run the features job: candles -> 30 TA-Lib features per symbol/timeframe -> `features`."""
    _run_job("features", target, end_offsets, start_offsets, detach, from_savepoint)


@strategy_app.command("run")
def strategy_run(
    target: Target = typer.Option(Target.local, help="local MiniCluster or the standalone cluster"),
    end_offsets: str = typer.Option("", help="bounded replay of `features`: stop at e.g. '0:157'"),
    start_offsets: str = typer.Option("", help="start at e.g. '0:0' instead of earliest"),
    detach: bool = typer.Option(False, help="submit and return"),
) -> None:
    """Run the strategy job: features -> predictions (CANDLEFLOW_PREDICTOR_URL /score) ->
    strategy + paper broker -> `predictions`, `orders`, `fills`, `equity`.

    The predictor must serve /score; while it is down, predictions come out `degraded`
    and the strategy makes no entries (stops and the kill-switch still apply).
    """
    _run_job("strategy", target, end_offsets, start_offsets, detach)


@candles_app.command("write")
def candles_write(
    group_id: str = typer.Option("", help="consumer group (default CANDLEFLOW_CANDLES_GROUP_ID)"),
    from_beginning: bool = typer.Option(
        False, "--from-beginning", help="re-read the topic from its first offsets (replay)"
    ),
    max_batch: int = typer.Option(0, min=0, help="max messages per batch (0 = from settings)"),
    max_wait_ms: int = typer.Option(0, min=0, help="max wait to fill a batch (0 = settings)"),
    once: bool = typer.Option(False, "--once", help="write one non-empty batch, then stop"),
    until_idle: float = typer.Option(
        0.0, "--until-idle", help="stop after S seconds without messages (0 = run forever)"
    ),
    retry_timeout: float = typer.Option(
        0.0, help="give up on an unreachable ClickHouse after S seconds (0 = retry forever)"
    ),
    log_every: float = typer.Option(5.0, help="progress log interval, seconds"),
) -> None:
    """Write `candles` to ClickHouse (`candles`, one row per window under FINAL).

    Micro-batches from a consumer group; malformed messages go to CANDLEFLOW_TOPIC_CANDLES_DLQ
    with a reason; offsets are committed after the insert (at-least-once + idempotent rows:
    candles re-emitted after a job restart collapse under FINAL).
    """
    from jobs.candles_writer import run_candles_writer
    from jobs.kafka_writer import WriterConfig

    s = get_settings()
    cfg = WriterConfig.from_settings(
        s,
        group_id=group_id or s.candles_group_id,
        max_batch=max_batch or None,
        max_wait_ms=max_wait_ms or None,
        once=once,
        until_idle_s=until_idle,
        retry_timeout_s=retry_timeout,
        log_every_s=log_every,
        from_beginning=from_beginning,
    )
    st = _until_broker_reset(run_candles_writer, s, cfg)
    console.print(
        f"wrote {st.rows:,} candles in {st.batches:,} batches; dead-lettered "
        f"{st.dead_lettered:,} -> {s.topic_candles_dlq}; committed {st.committed}"
    )


@features_app.command("write")
def features_write(
    group_id: str = typer.Option("", help="consumer group (default CANDLEFLOW_WRITER_GROUP_ID)"),
    max_batch: int = typer.Option(0, min=0, help="max messages per batch (0 = from settings)"),
    max_wait_ms: int = typer.Option(0, min=0, help="max wait to fill a batch (0 = settings)"),
    once: bool = typer.Option(False, "--once", help="write one non-empty batch, then stop"),
    until_idle: float = typer.Option(
        0.0, "--until-idle", help="stop after S seconds without messages (0 = run forever)"
    ),
    retry_timeout: float = typer.Option(
        0.0, help="give up on an unreachable store after S seconds (0 = retry forever)"
    ),
    log_every: float = typer.Option(5.0, help="progress log interval, seconds"),
) -> None:
    """Write `features` to the offline store, Redis (Feast online) and ClickHouse.

    Micro-batches from a consumer group; offsets are committed only after all three stores
    (and the dead-letter topic, for malformed messages) have the batch: at-least-once with
    idempotent writes, so a replay changes nothing visible. Unreachable stores are retried
    with backoff. SIGTERM/Ctrl-C finishes the current batch and commits it.
    """
    from jobs.feature_writer import WriterConfig, run_writer

    s = get_settings()
    cfg = WriterConfig.from_settings(
        s,
        group_id=group_id or None,
        max_batch=max_batch or None,
        max_wait_ms=max_wait_ms or None,
        once=once,
        until_idle_s=until_idle,
        retry_timeout_s=retry_timeout,
        log_every_s=log_every,
    )
    st = _until_broker_reset(run_writer, s, cfg)
    console.print(
        f"wrote {st.rows:,} rows in {st.batches:,} batches; dead-lettered {st.dead_lettered:,} "
        f"-> {s.topic_features_dlq}; committed {st.committed}"
    )


trading_app = typer.Typer(
    help="The strategy job's topics -> ClickHouse (trading_* tables).", no_args_is_help=True
)
app.add_typer(trading_app, name="trading")


@trading_app.command("write")
def trading_write(
    group_id: str = typer.Option("", help="consumer group (default CANDLEFLOW_TRADING_GROUP_ID)"),
    from_beginning: bool = typer.Option(
        False, "--from-beginning", help="re-read the topics from their first offsets (replay)"
    ),
    max_batch: int = typer.Option(0, min=0, help="max messages per batch (0 = from settings)"),
    max_wait_ms: int = typer.Option(0, min=0, help="max wait to fill a batch (0 = settings)"),
    once: bool = typer.Option(False, "--once", help="write one non-empty batch, then stop"),
    until_idle: float = typer.Option(
        0.0, "--until-idle", help="stop after S seconds without messages (0 = run forever)"
    ),
    retry_timeout: float = typer.Option(
        0.0, help="give up on an unreachable ClickHouse after S seconds (0 = retry forever)"
    ),
    log_every: float = typer.Option(5.0, help="progress log interval, seconds"),
) -> None:
    """Write `predictions`, `orders`, `fills`, `equity` to ClickHouse (migration 005).

    Micro-batches from a consumer group; malformed messages go to `<topic>_dlq` with a
    reason; offsets are committed only after the inserts: at-least-once, and replays change
    nothing under FINAL (ReplacingMergeTree keys, versions from the messages). An
    unreachable ClickHouse is retried with backoff. SIGTERM/Ctrl-C finishes the batch.
    """
    from jobs.trading_writer import run_trading_writer, topic_kinds, trading_config

    s = get_settings()
    cfg = trading_config(
        s,
        group_id=group_id or None,
        max_batch=max_batch or None,
        max_wait_ms=max_wait_ms or None,
        once=once,
        until_idle_s=until_idle,
        retry_timeout_s=retry_timeout,
        log_every_s=log_every,
        from_beginning=from_beginning,
    )
    try:
        topic_kinds(s)
    except ValueError as e:
        _fail(str(e))
    w = _until_broker_reset(run_trading_writer, s, cfg)
    st = w.stats
    console.print(
        f"wrote {st.rows:,} rows {w.rows_by_kind()} in {st.batches:,} batches; "
        f"dead-lettered {st.dead_lettered:,} -> <topic>_dlq; committed {st.committed}"
    )


def _run_job(
    name: str,
    target: Target,
    end_offsets: str,
    start_offsets: str,
    detach: bool,
    from_savepoint: str = "",
) -> None:
    """Same job file either way: in-process MiniCluster, or `flink run -py` on the cluster."""
    import importlib

    s = get_settings()
    args = _job_args(end_offsets, start_offsets)
    if target is Target.cluster:
        from infra.flink_cluster import FlinkCluster

        script = Path(__file__).parent / f"{name}.py"
        raise typer.Exit(
            FlinkCluster(s).run_py(
                script, args, detach=detach, from_savepoint=from_savepoint or None
            )
        )
    extra = (["--detach"] if detach else []) + (
        ["--from-savepoint", from_savepoint] if from_savepoint else []
    )
    importlib.import_module(f"jobs.{name}").main(args + extra, settings=s)


def _job_args(end_offsets: str, start_offsets: str) -> list[str]:
    args = []
    if end_offsets:
        args += ["--end-offsets", end_offsets]
    if start_offsets:
        args += ["--start-offsets", start_offsets]
    return args


# ------------------------------------------------------------------------------- flink
@flink_app.command("start")
def flink_start(
    taskmanagers: int = typer.Option(0, help="TaskManager processes (default from settings)"),
) -> None:
    """Start a standalone session cluster (JobManager + TaskManagers) on loopback."""
    from infra.flink_cluster import FlinkCluster

    s: Settings = get_settings()
    if taskmanagers:
        s = s.model_copy(update={"flink_taskmanagers": taskmanagers})
    console.print(FlinkCluster(s).start())


@flink_app.command("stop")
def flink_stop() -> None:
    """Stop the standalone cluster."""
    from infra.flink_cluster import FlinkCluster

    console.print(FlinkCluster(get_settings()).stop())


@flink_app.command("status")
def flink_status() -> None:
    """Cluster overview and jobs, from the REST API."""
    from infra.flink_cluster import FlinkCluster

    console.print(FlinkCluster(get_settings()).status())


def _cluster_or_fail():  # -> FlinkCluster
    from infra.flink_cluster import FlinkCluster

    c = FlinkCluster(get_settings())
    if c.overview() is None:
        _fail(f"no Flink cluster at {c.rest_url} (`candleflow flink start`)")
    return c


@flink_app.command("jobs")
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


@flink_app.command("savepoint")
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
            _fail(f"job {j['name']} ({j['jid']}) is {j['state']}, not RUNNING")
        path = c.savepoint(j["jid"], stop=stop, drain=drain, target=target)
    except (LookupError, RuntimeError, TimeoutError) as e:
        _fail(str(e))
        return
    stopped = "drained and stopped " if drain else "stopped " if stop else ""
    console.print(f"{stopped}{j['name']} ({j['jid']}): savepoint {path}")
    console.print(
        f"resume: candleflow {j['name'].removeprefix('candleflow-')} run --target cluster "
        f"--from-savepoint {path}"
    )


@flink_app.command("cancel")
def flink_cancel(job: str = typer.Argument(..., help="job id or name")) -> None:
    """Cancel a running job (its last checkpoint is retained for `--from-savepoint`)."""
    c = _cluster_or_fail()
    try:
        j = c.find_job(job)
        cp = c.checkpoints(j["jid"])
        c.cancel(j["jid"])
    except LookupError as e:
        _fail(str(e))
        return
    console.print(f"cancelled {j['name']} ({j['jid']}); last checkpoint: {cp['latest_path']}")


# ------------------------------------------------------------------------------- feast
@feast_app.command("env")
def feast_env_cmd() -> None:
    """Print `export` lines for the feast CLI: eval "$(candleflow feast env)".

    feature_repo/feature_store.yaml and its definitions read these resolved settings
    (project, state folder, Redis host/port, TTL).
    """
    import shlex

    from infra.feature_store import feast_env

    for k, v in feast_env(get_settings()).items():
        print(f"export {k}={shlex.quote(v)}")


@feast_app.command("apply")
def feast_apply() -> None:
    """Register entities, sources, feature views and the model_v1 service (= feast apply)."""
    from infra.feature_store import FeatureStoreClient

    s = get_settings()
    FeatureStoreClient(s).apply()
    console.print(f"applied project {s.feast_project!r}; registry {s.feast_registry}")


@feast_app.command("backfill")
def feast_backfill(
    file: Path = typer.Argument(
        None, help="1m candles csv(.gz): ts_ms,symbol,open,high,low,close,volume[,vwap]"
    ),
    start: str = typer.Option("", help="first bar start, ISO (default: file start)"),
    end: str = typer.Option("", help="end (exclusive), ISO (default: file end)"),
    symbols: str = typer.Option("", help="comma-separated symbols (default: all)"),
) -> None:
    """Compute features in batch from 1m candles and append them to the offline store.

    For training on history before the stream has written it (the Flink features job
    computes the same values); default file: the real 2021 Binance 1m candles.
    """
    import pandas as pd

    from infra.feature_store import FeatureStoreClient
    from jobs.dataset import feature_rows_from_candles, utc_ts

    s = get_settings()
    path = file or s.data_dir / "binance_1m_top5_2021.csv.gz"
    df = pd.read_csv(path)
    if start:
        df = df[df.ts_ms >= utc_ts(pd.Timestamp(start)).value // 1_000_000]
    if end:
        df = df[df.ts_ms < utc_ts(pd.Timestamp(end)).value // 1_000_000]
    if symbols:
        df = df[df.symbol.isin([x.strip() for x in symbols.split(",")])]
    if df.empty:
        _fail("no candles selected")
    client = FeatureStoreClient(s)
    client.apply()
    t0 = time.monotonic()
    n = 0
    with _progress() as prog:
        task = prog.add_task("features", total=df.symbol.nunique())
        for _, g in df.groupby("symbol"):
            n += len(g)
            client.write_offline(feature_rows_from_candles(g, "1m"))
            prog.advance(task)
    console.print(f"{n:,} feature rows -> {s.feast_offline_dir} in {time.monotonic() - t0:.1f} s")


# ----------------------------------------------------------------------------- dataset
@dataset_app.command("build")
def dataset_build(
    start: str = typer.Option(..., help="first bar event time, ISO (UTC if no zone)"),
    end: str = typer.Option(..., help="end (exclusive), ISO"),
    label: list[str] = typer.Option(
        ..., help="fwd_ret_N (N bars ahead); repeat or comma-separate for several"
    ),
    out: Path = typer.Option(..., help="output parquet file"),
    symbols: str = typer.Option("", help="comma-separated symbols (default: all)"),
    timeframe: list[str] = typer.Option([], help="timeframes, e.g. 1m (default: all)"),
    flat_threshold: float = typer.Option(
        0.001, help="class: up if fwd_ret > T, down if < -T, else flat"
    ),
) -> None:
    """Training set: Feast point-in-time features (model_v1) + forward-return labels.

    Rows are bars with event time in [start, end); rows whose label is unknown (end of
    data, missing future bar) are dropped. Labels look ahead, features never do.
    """
    import pandas as pd

    from jobs.dataset import build_dataset

    try:
        t_start, t_end = pd.Timestamp(start), pd.Timestamp(end)
    except ValueError as e:
        _fail(f"bad --start/--end: {e}")
        return
    with _progress() as prog:
        task = prog.add_task("point-in-time join", total=None)

        def advance(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total)

        try:
            res = build_dataset(
                get_settings(),
                t_start,
                t_end,
                label,
                out,
                symbols=[x.strip() for x in symbols.split(",") if x.strip()] or None,
                timeframes=timeframe or None,
                flat_threshold=flat_threshold,
                on_progress=advance,
            )
        except (ValueError, FileNotFoundError) as e:
            _fail(str(e))
            return
    console.print(
        f"wrote {res.rows:,} rows to {res.path} in {res.seconds:.1f} s "
        f"({res.dropped_unknown_label:,} dropped: label unknown)"
    )
    t = Table("label", "down", "flat", "up")
    for name, counts in res.balance.items():
        t.add_row(name, *(f"{counts[c]:,}" for c in ("down", "flat", "up")))
    console.print(t)


# ------------------------------------------------------------------------------- train
@app.command("train")
def train_cmd(
    dataset: Path = typer.Argument(..., help="training set parquet (candleflow dataset build)"),
    label: str = typer.Option("fwd_ret_5", help="fwd_ret_N: its 3-class label is the target"),
    folds: int = typer.Option(5, min=1, help="walk-forward folds"),
    scheme: str = typer.Option(
        "expanding", help="expanding (all earlier data) or rolling (last --window-blocks)"
    ),
    window_blocks: int = typer.Option(2, min=1, help="rolling: training blocks per fold"),
    rounds: int = typer.Option(400, min=1, help="max boosting rounds (early stopping per fold)"),
    early_stopping: int = typer.Option(30, min=1, help="early stopping patience (rounds)"),
    max_depth: int = typer.Option(4, min=1),
    eta: float = typer.Option(0.05, min=0.0),
    nthread: int = typer.Option(0, min=0, help="XGBoost threads (0 = all cores)"),
    model_name: str = typer.Option("", help="BentoML model name (default MODEL_NAME)"),
    reports_dir: Path = typer.Option(None, help="report folder (default REPORTS_DIR)"),
    save: bool = typer.Option(True, "--save/--no-save", help="save to the BentoML model store"),
) -> None:
    """Walk-forward XGBoost training on a Feast training set; saves the booster to the
    BentoML model store ($BENTOML_HOME) and writes report.json/.md + PNG plots."""
    from jobs.train import TrainConfig, train

    cfg = TrainConfig(
        label=label,
        folds=folds,
        scheme=scheme,
        window_blocks=window_blocks,
        rounds=rounds,
        early_stopping=early_stopping,
        max_depth=max_depth,
        eta=eta,
        nthread=nthread,
    )
    with _progress() as prog:
        tasks: dict[str, TaskID] = {}

        def advance(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = prog.add_task(stage, total=total)
            prog.update(tasks[stage], completed=done, total=total)

        try:
            res = train(
                get_settings(),
                dataset,
                cfg,
                save=save,
                model_name=model_name or None,
                reports_dir=reports_dir,
                on_progress=advance,
            )
        except (ValueError, FileNotFoundError) as e:
            _fail(str(e))
            return
    t = Table("predictor", "log loss", "accuracy", "AUC OvR", "AUC up", "hit rate", "ret bps")
    for name, m in res.report["metrics"].items():
        t.add_row(
            name,
            *(
                "-" if m[k] is None else f"{m[k]:.4f}" if k != "mean_ret_bps" else f"{m[k]:.2f}"
                for k in ("log_loss", "accuracy", "auc_ovr", "auc_up", "hit_rate", "mean_ret_bps")
            ),
        )
    console.print(t)
    console.print(
        f"model {res.tag or '(not saved)'}: {res.report['rows']:,} rows, "
        f"{res.report['rounds']} rounds, {res.report['seconds']:.1f} s; report {res.report_dir}"
    )


# -------------------------------------------------------------------------- clickhouse
@clickhouse_app.command("migrate")
def clickhouse_migrate(
    url: str = typer.Option("", help="override CANDLEFLOW_CLICKHOUSE_URL"),
) -> None:
    """Apply sql/clickhouse/NNN_*.sql not yet in schema_migrations (re-runnable)."""
    from infra.clickhouse import ClickHouseError, connect

    try:
        with connect(url or get_settings()) as store:
            applied = store.migrate()
            console.print(
                f"{store.backend} {store.version()} database {store.database}: "
                + (f"applied {', '.join(applied)}" if applied else "up to date")
            )
    except ClickHouseError as e:
        _fail(str(e))


@clickhouse_app.command("query")
def clickhouse_query(
    sql: str = typer.Argument(..., help="one SQL statement"),
    url: str = typer.Option("", help="override CANDLEFLOW_CLICKHOUSE_URL"),
    limit: int = typer.Option(100, help="show at most N rows"),
) -> None:
    """Run one statement and print the result as a table."""
    from infra.clickhouse import ClickHouseError, connect

    try:
        with connect(url or get_settings()) as store:
            is_select = sql.lstrip().split(None, 1)[0].upper() in (
                "SELECT", "SHOW", "DESCRIBE", "DESC", "EXISTS", "WITH",
            )  # fmt: skip
            if not is_select:
                store.execute(sql)
                console.print("ok")
                return
            rows = store.query(sql)
    except ClickHouseError as e:
        _fail(str(e))
        return
    except Exception as e:  # the server's / chDB's own error text is the useful part
        _fail(str(e).strip().splitlines()[0] if str(e).strip() else repr(e))
        return
    t = Table(*(rows[0].keys() if rows else []))
    for r in rows[:limit]:
        t.add_row(*("NULL" if v is None else str(v) for v in r.values()))
    Console().print(t)
    console.print(f"{len(rows):,} row(s)" + (f", first {limit} shown" if len(rows) > limit else ""))


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not sys.stderr.isatty(),
    )


if __name__ == "__main__":
    app()
