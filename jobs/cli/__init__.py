"""``candleflow``: the command line for the whole pipeline (``candleflow --help``).

This file is the command tree: the groups and which function each command is. The commands
live in one module per group (stack, ingest, flink, writers, ml, backtest, clickhouse,
grafana, submit, serve); what they share is in :mod:`jobs.cli.common` (console, enums) and
:mod:`jobs.cli.options` (options used by several commands, defined once).
"""

from __future__ import annotations

import logging

import typer
from rich.logging import RichHandler

from jobs.cli import backtest, clickhouse, flink, ingest, ml, stack, writers
from jobs.cli.common import console
from jobs.cli.grafana import grafana_app
from jobs.cli.submit import submit as submit_cmd
from jobs.ml.serve import serve_cmd

app = typer.Typer(
    name="candleflow",
    help="Real-time crypto candles and features: Kafka -> Flink SQL -> Kafka.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def group(name: str, help: str) -> typer.Typer:
    sub = typer.Typer(help=help, no_args_is_help=True)
    app.add_typer(sub, name=name)
    return sub


ingest_app = group("ingest", "Put trades on the `trades` topic (files or exchanges).")
candles_app = group("candles", "The candles Flink SQL job.")
features_app = group("features", "The indicator features Flink job.")
strategy_app = group(
    "strategy", "The strategy Flink job: predictions, paper orders, fills, equity."
)
flink_app = group("flink", "A standalone Flink cluster from the pyflink distribution.")
clickhouse_app = group(
    "clickhouse", "The ClickHouse analytics store (CANDLEFLOW_CLICKHOUSE_URL: server or chDB)."
)
feast_app = group("feast", "The Feast feature store (feature_repo/): env for the feast CLI, apply.")
dataset_app = group("dataset", "Training sets: point-in-time features from Feast + labels.")
app.add_typer(grafana_app, name="grafana")
trading_app = group("trading", "The strategy job's topics -> ClickHouse (trading_* tables).")


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


app.command()(stack.up)
app.command()(stack.down)
app.command()(stack.status)
app.command("install-jars")(stack.install_jars)
app.command()(backtest.demo)
app.command()(backtest.backtest)
ingest_app.command("replay")(ingest.ingest_replay)
ingest_app.command("live")(ingest.ingest_live)
candles_app.command("run")(flink.candles_run)
features_app.command("run")(flink.features_run)
strategy_app.command("run")(flink.strategy_run)
candles_app.command("write")(writers.candles_write)
features_app.command("write")(writers.features_write)
trading_app.command("write")(writers.trading_write)
flink_app.command("start")(flink.flink_start)
flink_app.command("stop")(flink.flink_stop)
flink_app.command("status")(flink.flink_status)
flink_app.command("jobs")(flink.flink_jobs)
flink_app.command("savepoint")(flink.flink_savepoint)
flink_app.command("cancel")(flink.flink_cancel)
feast_app.command("env")(ml.feast_env_cmd)
feast_app.command("apply")(ml.feast_apply)
feast_app.command("backfill")(ml.feast_backfill)
dataset_app.command("build")(ml.dataset_build)
app.command("train")(ml.train_cmd)
clickhouse_app.command("migrate")(clickhouse.clickhouse_migrate)
clickhouse_app.command("query")(clickhouse.clickhouse_query)
app.command("submit")(submit_cmd)
app.command("serve")(serve_cmd)

if __name__ == "__main__":
    app()
