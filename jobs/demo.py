"""`candleflow demo`: the candles stage end to end on local defaults and real data.

up (Tansu + Redis) -> replay real Binance trades -> candles Flink SQL job (local
MiniCluster, bounded to exactly what was replayed) -> summary of every output topic.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path

from rich.console import Console
from rich.table import Table

from infra.connectors import Endpoints
from infra.kafka import ensure_topics, read_all
from infra.local import local_stack
from infra.settings import Settings
from jobs import candles
from jobs.ingest.replay import TradeSink, load_trades, repeated_messages


def run_demo(
    settings: Settings, data: Path, console: Console, progress_factory
) -> dict[str, object]:
    t_start = time.monotonic()
    console.rule("[bold]1/4 local stack")
    for svc in local_stack(settings):
        console.print(svc.start())
    topics = [
        settings.topic_trades,
        settings.topic_trades_dlq,
        settings.topic_trades_late,
        settings.topic_candles,
    ]
    ensure_topics(settings.kafka_bootstrap, topics, partitions=settings.topic_partitions)
    before = {
        t: len(read_all(settings.kafka_bootstrap, t, idle_timeout_s=1, deserialize=None))
        for t in topics[1:]
    }

    console.rule(f"[bold]2/4 replay {data.name}")
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

    console.rule("[bold]3/4 candles job (Flink SQL, local MiniCluster, bounded replay)")
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

    console.rule("[bold]4/4 results")
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
    summary: dict[str, object] = {
        "broker": settings.kafka_bootstrap,
        "redis": settings.redis_url,
        "topics": {
            "trades": settings.topic_trades,
            "candles": settings.topic_candles,
            "dead letters": settings.topic_trades_dlq,
            "late trades": settings.topic_trades_late,
        },
        "trades_sent": sink.stats.sent,
        "candles": dict(per_tf),
        "dead_lettered_by_job": dlq,
        "late_trades": late,
        "job_seconds": round(job_s, 1),
        "total_seconds": round(time.monotonic() - t_start, 1),
        "logs": str(settings.logs_dir),
    }
    s = Table("what", "where / value", title="demo summary")
    for k, v in summary.items():
        s.add_row(k, json.dumps(v) if isinstance(v, dict) else str(v))
    console.print(s)
    console.print(
        "The local stack keeps running: `candleflow status`, `candleflow down` (or `make down`)."
    )
    return summary
