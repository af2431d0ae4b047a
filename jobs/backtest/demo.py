"""`candleflow demo` / `make demo`: the whole mission end to end on local defaults + real data.

A. up (Tansu + Redis) -> replay the real Binance trades sample -> candles Flink SQL job
   (local MiniCluster, bounded to exactly what was replayed) -> candles per timeframe.
B. The sample covers minutes, too little to warm 100-bar indicators or train a model, so the
   rest runs on real 2021 1m klines (../shared/data) entering at the candles topic:
   features job -> feature writer (Feast offline + Redis online + embedded ClickHouse) ->
   walk-forward XGBoost (Feast training sets) -> `bentoml serve` (asked for online
   predictions from Redis) -> strategy job + paper broker -> trading writer -> report
   (jobs/backtest/run.py). Then a summary of where everything is; time and peak memory
   (the demo's process tree, sampled) are printed and go into the summary.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from infra.connectors import Endpoints
from infra.kafka import ensure_topics, read_all
from infra.local import local_stack
from infra.settings import Settings
from jobs.flink import candles
from jobs.ingest.replay import TradeSink, load_trades, repeated_messages

if TYPE_CHECKING:
    from jobs.backtest.config import BacktestResult


class PeakMemory:
    """Peak RSS of this process + all its children (JVMs, Python workers, bentoml)."""

    def __init__(self, every_s: float = 0.5) -> None:
        import threading

        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(every_s,), daemon=True)

    def _run(self, every_s: float) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.wait(every_s):
            total = 0
            for p in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
            self.peak = max(self.peak, total)

    def __enter__(self) -> PeakMemory:
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join()


# The demo's rules: the default entry threshold (0.10) is rarely reached by a model trained
# on a few days; these trade often enough to show every part (udfs/strategy_rules.md).
# what the demo's summary and the README's quick start tell a user to run next (a test runs
# the request against a backtest's served model: tests/integration/jobs/backtest/test_backtest.py)
SERVE_LINE = ".venv/bin/candleflow serve --backtest last"
CURL_LINE = (
    "curl -s -X POST http://127.0.0.1:3000/predict -H 'Content-Type: application/json' "
    """-d '{"symbols": ["BTCUSDT"], "timeframe": "1m", "max_staleness_s": 1e10}'"""
)
DEMO_STRATEGY = {
    "entry_threshold": 0.03,
    "exit_threshold": -0.02,
    "position_fraction": 0.2,
    "cooldown_bars": 3,
    "max_hold_bars": 10,
    "stop_loss_pct": 0.005,
    "strategy_id": "demo",
}


def run_demo(
    settings: Settings,
    data: Path,
    console: Console,
    progress_factory: Any,
    *,
    klines: Path | None = None,
    symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDT", "SOLUSDT"),
    start: str = "2021-04-20",
    end: str = "2021-04-21",
    history_days: float = 3.0,
) -> dict[str, object]:
    with PeakMemory() as mem:
        summary = _run_demo(
            settings, data, console, progress_factory, klines, symbols, start, end, history_days
        )
    summary["peak_memory_gb"] = round(mem.peak / 2**30, 2)
    console.print(
        f"[bold]demo done in {summary['total_seconds']} s, peak memory "
        f"{summary['peak_memory_gb']} GiB (this process tree)"
    )
    return summary


def _run_demo(
    settings: Settings,
    data: Path,
    console: Console,
    progress_factory: Any,
    klines: Path | None,
    symbols: tuple[str, ...],
    start: str,
    end: str,
    history_days: float,
) -> dict[str, object]:
    t_start = time.monotonic()
    before = _start_stack(settings, console)
    sink = _replay_trades(settings, data, console, progress_factory)
    _candles_job(settings, sink, console)
    per_tf, dlq, late = _show_candles(settings, before, console)
    candles_s = time.monotonic() - t_start

    # B: the rest of the mission on real klines ------------------------------------------
    res = _backtest(settings, console, progress_factory, klines, symbols, start, end, history_days)
    _show_metrics(res, start, end, console)
    summary = _summary(settings, sink, per_tf, dlq, late, candles_s, res, t_start)
    _show_summary(summary, console)
    (res.out_dir / "demo_summary.json").write_text(json.dumps(summary, indent=1, default=str))
    return summary


def _start_stack(settings: Settings, console: Console) -> dict[str, int]:
    """A 1/4: the local stack and the candles stage's topics; returns how many records the
    topics after ``trades`` already hold (the demo counts only its own)."""
    console.rule("[bold]A 1/4 local stack")
    for svc in local_stack(settings):
        console.print(svc.start())
    topics = [
        settings.topic_trades,
        settings.topic_trades_dlq,
        settings.topic_trades_late,
        settings.topic_candles,
    ]
    ensure_topics(settings.kafka_bootstrap, topics, partitions=settings.topic_partitions)
    return {
        t: len(read_all(settings.kafka_bootstrap, t, idle_timeout_s=1, deserialize=None))
        for t in topics[1:]
    }


def _replay_trades(
    settings: Settings, data: Path, console: Console, progress_factory: Any
) -> TradeSink:
    """A 2/4: the real trades sample -> the trades topic, once; returns the sink."""
    console.rule(f"[bold]A 2/4 replay {data.name}")
    df = load_trades(data)
    sink = TradeSink.for_settings(settings)
    t0 = time.monotonic()
    with progress_factory() as prog:
        task = prog.add_task("trades -> kafka", total=len(df))
        for i, msg in enumerate(repeated_messages(df, 1)):
            sink.send(msg)
            if i % 1000 == 0:
                prog.update(task, completed=i)
        prog.update(task, completed=len(df))
    sink.flush()
    console.print(
        f"sent {sink.stats.sent:,} trades in {time.monotonic() - t0:.1f}s, "
        f"offsets {sink.tracker.start} .. {sink.tracker.end}"
    )
    return sink


def _candles_job(settings: Settings, sink: TradeSink, console: Console) -> None:
    """A 3/4: the candles Flink SQL job, bounded to exactly the replayed offsets."""
    console.rule("[bold]A 3/4 candles job (Flink SQL, local MiniCluster, bounded replay)")
    t0 = time.monotonic()
    handle = candles.submit(
        Endpoints(settings, start_offsets=sink.tracker.start, end_offsets=sink.tracker.end)
    )
    console.print(
        f"job {handle.job_id} submitted; JVM start {handle.jvm_start_s:.1f}s; waiting ..."
    )
    handle.wait()
    job_s = time.monotonic() - t0
    console.print(f"job finished in {job_s:.1f}s")


def _show_candles(
    settings: Settings, before: dict[str, int], console: Console
) -> tuple[Counter[str], int, int]:
    """A 4/4: the new candles per timeframe and a sample; returns the candles per timeframe
    and how many trades the job dead-lettered and found late."""
    console.rule("[bold]A 4/4 candles")
    dec = lambda b: json.loads(b, parse_float=Decimal)  # noqa: E731
    out = read_all(
        settings.kafka_bootstrap, settings.topic_candles, idle_timeout_s=3, deserialize=dec
    )
    new = out[before[settings.topic_candles] :]
    dlq = (
        len(read_all(settings.kafka_bootstrap, settings.topic_trades_dlq, idle_timeout_s=1))
        - before[settings.topic_trades_dlq]
    )
    late = (
        len(read_all(settings.kafka_bootstrap, settings.topic_trades_late, idle_timeout_s=1))
        - before[settings.topic_trades_late]
    )
    per_tf = Counter(c["timeframe"] for c in new)
    t = Table("timeframe", "candles", "trades covered")
    for tf in ("1m", "5m", "15m", "1h"):
        t.add_row(
            tf, f"{per_tf[tf]:,}", f"{sum(c['trade_count'] for c in new if c['timeframe'] == tf):,}"
        )
    console.print(t)
    sample = next(
        (c for c in new if c["timeframe"] == "1m" and c["symbol"] == "BTCUSDT"),
        new[0] if new else None,
    )
    if sample:
        console.print("sample candle:", json.dumps(sample, default=str))
    return per_tf, dlq, late


def _backtest(
    settings: Settings,
    console: Console,
    progress_factory: Any,
    klines: Path | None,
    symbols: tuple[str, ...],
    start: str,
    end: str,
    history_days: float,
) -> BacktestResult:
    """B: a backtest on real 1m klines with the demo's rules (jobs/backtest/run.py)."""
    import pandas as pd

    from jobs.backtest.run import BacktestConfig, run_backtest

    cfg = BacktestConfig(
        data=klines or settings.data_dir / "binance_1m_top5_2021.csv.gz",
        start=pd.Timestamp(start),
        end=pd.Timestamp(end),
        symbols=symbols,
        history=pd.Timedelta(days=history_days),
        retrain_every=pd.Timedelta(days=1),
        rounds=100,
        strategy=DEMO_STRATEGY,
    )
    with progress_factory() as prog:
        tasks: dict[str, Any] = {}

        def advance(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = prog.add_task(stage, total=total)
            prog.update(tasks[stage], completed=done, total=total)

        return run_backtest(
            settings,
            cfg,
            on_stage=lambda m: console.rule(f"[bold]B {m}"),
            on_progress=advance,
            on_serving=lambda url, s: online_predictions(url, symbols, console),
        )


def _show_metrics(res: BacktestResult, start: str, end: str, console: Console) -> None:
    """The backtest's headline metrics against buy-and-hold."""
    r = res.report
    m = r["metrics"]
    t = Table(
        "metric", "strategy", "buy-and-hold", title=f"backtest {r['run_id']} ({start}..{end})"
    )
    for name, a, b in (
        ("total return", "total_return", "bh_total_return"),
        ("max drawdown", "max_drawdown", "bh_max_drawdown"),
    ):
        t.add_row(name, _pct(m.get(a)), _pct(m.get(b)))
    t.add_row("Sharpe", _num(m.get("sharpe")), _num(m.get("bh_sharpe")))
    t.add_row("round trips / win rate", f"{m.get('round_trips')} / {_pct(m.get('win_rate'))}", "")
    t.add_row("fees paid", _num(m.get("fees_paid")), "")
    console.print(t)


def _summary(
    settings: Settings,
    sink: TradeSink,
    per_tf: Counter[str],
    dlq: int,
    late: int,
    candles_s: float,
    res: BacktestResult,
    t_start: float,
) -> dict[str, object]:
    """Where everything is, and what the demo counted and took."""
    r = res.report
    tags = [x["tag"] for x in r["walk_forward"]["models"]]
    return {
        "broker": settings.kafka_bootstrap,
        "redis (Feast online store)": settings.redis_url,
        "candles stage topics": {
            "trades": settings.topic_trades,
            "candles": settings.topic_candles,
            "dead letters": settings.topic_trades_dlq,
            "late trades": settings.topic_trades_late,
        },
        "trades_sent": sink.stats.sent,
        "candles": dict(per_tf),
        "dead_lettered_by_job": dlq,
        "late_trades": late,
        "candles_stage_seconds": round(candles_s, 1),
        "pipeline topics": r["topics"],
        "clickhouse": r["clickhouse"]["url"],
        "clickhouse tables": (
            "features trading_predictions trading_orders trading_fills trading_equity "
            "pnl_daily_view"
        ),
        "feast": f"project {res.run_id}, registry + offline under {res.out_dir / 'feast'}",
        "models (walk-forward)": tags,
        "bentoml model store": "$BENTOML_HOME (default ~/bentoml): bentoml models list",
        "serve the last model": SERVE_LINE,
        "online predictions (during the demo)": r.get("serving_check"),
        "orders / fills": f"{len(res.orders)} / {len(res.fills)}",
        "report": str(res.out_dir / "report.md"),
        "plots": r["plots"],
        "backtest_seconds": r["seconds"],
        "backtest_timings_s": r["timings_s"],
        "total_seconds": round(time.monotonic() - t_start, 1),
        "logs": str(settings.logs_dir),
    }


def _show_summary(summary: dict[str, object], console: Console) -> None:
    s = Table("what", "where / value", title="demo summary")
    for k, v in summary.items():
        s.add_row(k, json.dumps(v, default=str) if isinstance(v, dict | list) else str(v))
    console.print(s)
    console.print(
        "The local stack keeps running: `candleflow status`, `candleflow down` (or `make down`)."
    )
    # printed whole (a table cell is cut to the terminal's width): both lines run as they are
    console.print(f"Serve the last model:  {SERVE_LINE}", soft_wrap=True)
    console.print(f"Then ask it:  {CURL_LINE}", soft_wrap=True)


def online_predictions(url: str, symbols: tuple[str, ...], console: Console) -> dict[str, Any]:
    """POST /predict for the demo's symbols: features read from Redis (Feast online store).
    The replayed bars are from 2021, so the request allows that much staleness."""
    import urllib.request

    body = json.dumps(
        {"symbols": list(symbols), "timeframe": "1m", "max_staleness_s": 1e10}
    ).encode()
    req = urllib.request.Request(
        url + "/predict", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        out: dict[str, Any] = json.loads(resp.read())
    console.print(f"POST {url}/predict (online features from Redis):")
    for p in out["predictions"]:
        probs = {k: round(v, 3) for k, v in p["probabilities"].items()}
        console.print(f"  {p['symbol']} @ {p['event_time']}: {probs}")
    return {
        "model_tag": out["model_tag"],
        "predictions": {p["symbol"]: round(p["signal"], 4) for p in out["predictions"]},
    }


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{v:.2%}"


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:,.2f}"
