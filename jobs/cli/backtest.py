"""``candleflow demo`` and ``candleflow backtest``: replay history through the jobs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import (
    TaskID,
)
from rich.table import Table

from infra.settings import get_settings
from jobs.cli.common import console, fail, progress


def demo(
    data: Path = typer.Option(
        None, help="trades file (default: the real Binance sample in ../shared/data)"
    ),
) -> None:
    """End to end on local services and real data: up -> replay real trades -> candles job;
    then a backtest on real 1m klines: features job -> feature writer (Feast + Redis +
    ClickHouse) -> walk-forward XGBoost -> bentoml serve -> strategy job -> trading writer
    -> report; a summary of where everything is. Then `candleflow serve --backtest last`."""
    from jobs.backtest.demo import run_demo

    s = get_settings()
    path = data or s.data_dir / "binance_trades_sample.parquet"
    if not path.exists():
        fail(f"{path} not found; pass --data FILE")
    run_demo(s, path, console, progress)


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
    from jobs.backtest.run import BacktestConfig, run_backtest

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
        fail(str(e))
        return
    with progress() as prog:
        tasks: dict[str, TaskID] = {}

        def advance(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = prog.add_task(stage, total=total)
            prog.update(tasks[stage], completed=done, total=total)

        try:
            res = run_backtest(s, cfg, on_stage=lambda m: console.rule(m), on_progress=advance)
        except (ValueError, FileNotFoundError) as e:
            fail(str(e))
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
