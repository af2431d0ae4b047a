"""Candles benchmark: Flink SQL job vs Quix Streams vs raw consumers, one run, one topic.

    python -m bench.candles [--repeat 5] [--out bench/results/candles.json]

1. Start a Tansu broker; prefill topic `trades` with the real Binance trades replayed
   `--repeat` times (time-shifted per pass) + one sentinel trade per symbol 2 h later, so
   every engine can close every real window. Producing is not part of any number.
2. Raw ceilings: kafka-python and confluent-kafka consume the whole topic + json.loads.
3. Flink: the project's candles job (bounded to the prefilled offsets; it also computes
   5m/15m/1h, DLQ and late routing). JVM start is reported separately.
4. Quix Streams: 1m tumbling window per symbol (event time = ts_ms, grace = the same
   watermark delay), open/close by timestamp, high/low/volume/quote volume/count/buy/sell.
5. Flink at parallelism 2: the same trades in a second topic of 2 partitions (keyed by
   symbol), the job with parallelism 2 (skip with --no-parallelism2).

Steady-state rate = trades covered by the 1m candles emitted in the middle 80% of the
emission time span / that span (emission time = `emitted_at` stamped by each engine).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.common import machine_info, write_report
from infra.local import TansuBroker, free_port
from infra.settings import SHARED_DATA, Settings

HERE = Path(__file__).resolve().parent


def steady_rate(
    emitted: list[tuple[float, int]], lo: float = 0.1, hi: float = 0.9
) -> dict[str, float]:
    """emitted = [(emitted_at_s, trade_count)] -> trades/s over the middle of the span."""
    emitted = sorted(emitted)
    t0, t1 = emitted[0][0], emitted[-1][0]
    a, b = t0 + lo * (t1 - t0), t0 + hi * (t1 - t0)
    n = sum(c for t, c in emitted if a <= t <= b)
    return {
        "steady_trades_per_s": n / (b - a) if b > a else float("nan"),
        "emission_span_s": t1 - t0,
        "window_s": b - a,
        "trades_in_window": n,
    }


def iso_to_s(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def prefill(bootstrap: str, topic: str, repeat: int) -> tuple[int, dict[int, int], int, int]:
    """Returns (messages, end offsets, sentinel count, first sentinel ts_ms)."""
    from confluent_kafka import Producer

    from jobs.ingest.replay import load_trades, repeated_messages

    df = load_trades(SHARED_DATA / "binance_trades_sample.parquet")
    msgs = list(repeated_messages(df, repeat))
    last = max(m["ts_ms"] for m in msgs)
    per_symbol = list({m["symbol"]: m for m in msgs}.values())
    sentinels = [  # two rounds: +2 h closes every real window, +4 h makes engines flush them
        {**m, "ts_ms": last + hours * 3_600_000, "trade_id": i}
        for hours in (2, 4)
        for i, m in enumerate(per_symbol)
    ]
    end: dict[int, int] = {}

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            raise RuntimeError(err)
        end[msg.partition()] = max(end.get(msg.partition(), 0), msg.offset() + 1)

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.size": 1_000_000})
    for m in msgs + sentinels:
        while True:
            try:
                p.produce(
                    topic, json.dumps(m).encode(), m["symbol"].encode(), on_delivery=on_delivery
                )
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    p.flush()
    return len(msgs) + len(sentinels), end, len(sentinels), last + 2 * 3_600_000


def raw_kafka_python(bootstrap: str, topic: str, n: int) -> dict[str, float]:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tp = TopicPartition(topic, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    got, t0 = 0, time.perf_counter()
    while got < n:
        for recs in c.poll(timeout_ms=1000, max_records=10_000).values():
            for r in recs:
                json.loads(r.value)
            got += len(recs)
    dt = time.perf_counter() - t0
    c.close()
    return {"msgs": got, "seconds": dt, "msgs_per_s": got / dt}


def raw_confluent(bootstrap: str, topic: str, n: int) -> dict[str, float]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"raw-{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    c.assign([TopicPartition(topic, 0, 0)])
    got, t0 = 0, time.perf_counter()
    while got < n:
        for m in c.consume(num_messages=10_000, timeout=1.0):
            if m.error() is None:
                json.loads(m.value())
                got += 1
    dt = time.perf_counter() - t0
    c.close()
    return {"msgs": got, "seconds": dt, "msgs_per_s": got / dt}


def run_flink(s: Settings, end: dict[int, int], sentinel_ts: int) -> dict[str, Any]:
    from infra.connectors import Endpoints
    from infra.kafka import read_all
    from jobs.flink import candles

    t0 = time.perf_counter()
    handle = candles.submit(Endpoints(s, end_offsets=end))
    handle.wait()
    wall = time.perf_counter() - t0
    out = [
        c
        for c in read_all(s.kafka_bootstrap, s.topic_candles, idle_timeout_s=3)
        if c["timeframe"] == "1m"
    ]
    real = [c for c in out if c["window_start_ms"] < sentinel_ts - 60_000]
    return {
        "jvm_start_s": handle.jvm_start_s,
        "wall_s_submit_to_finish": wall,
        "candles_1m": len(real),
        "trades_in_1m_candles": sum(c["trade_count"] for c in real),
        **steady_rate([(iso_to_s(c["emitted_at"]), c["trade_count"]) for c in real]),
    }


def flink_stage_profile(s: Settings, end: dict[int, int], n: int) -> dict[str, float]:
    """Where Flink's time goes: the same bounded source into a blackhole sink with
    increasing work (each includes job start-up, so these are lower bounds)."""
    from infra.connectors import Endpoints, render_with
    from jobs.flink.env import table_env

    t_env = table_env(s, "candleflow-bench-profile")
    endpoints = Endpoints(s, end_offsets=end)
    src = render_with(endpoints.kafka_source(s.topic_trades))
    endpoints.start_sources()  # group-offsets: the group starts at the earliest offset
    fields = ["ts_ms", "symbol", "price", "qty", "side", "trade_id", "exchange", "price"]
    stages = {
        "raw_read": ("raw", "CHAR_LENGTH(payload)"),
        "raw_read_8x_JSON_VALUE": (
            "raw",
            "CHAR_LENGTH(CONCAT("
            + ",".join(f"JSON_VALUE(payload, '$.{f}')" for f in fields)
            + "))",
        ),
        "json_format_read": ("json", "CHAR_LENGTH(symbol)"),
    }
    out: dict[str, float] = {}
    for name, (fmt, expr) in stages.items():
        cols = "payload STRING" if fmt == "raw" else "ts_ms BIGINT, symbol STRING, price STRING"
        opts = src.replace("'format' = 'raw'", f"'format' = '{fmt}'")
        t_env.execute_sql("DROP TEMPORARY TABLE IF EXISTS p_src")
        t_env.execute_sql("DROP TEMPORARY TABLE IF EXISTS p_sink")
        t_env.execute_sql(f"CREATE TEMPORARY TABLE p_src ({cols}) WITH ({opts})")
        t_env.execute_sql("CREATE TEMPORARY TABLE p_sink (c INT) WITH ('connector' = 'blackhole')")
        t0 = time.perf_counter()
        t_env.execute_sql(f"INSERT INTO p_sink SELECT {expr} FROM p_src").wait()
        out[f"{name}_trades_per_s_incl_startup"] = n / (time.perf_counter() - t0)
    return out


def run_parallel(s: Settings, repeat: int, p1: dict[str, Any]) -> dict[str, Any]:
    """The same trades in a topic of 2 partitions (keyed by symbol), the job at parallelism 2:
    throughput, and per-core efficiency against the parallelism-1 run of the same run."""
    from infra.kafka import ensure_topics

    sp = s.model_copy(
        update={
            "parallelism": 2,
            "topic_trades": s.topic_trades + "_p2",
            "topic_candles": s.topic_candles + "_p2",
            "topic_trades_dlq": s.topic_trades_dlq + "_p2",
            "topic_trades_late": s.topic_trades_late + "_p2",
        }
    )
    ensure_topics(sp.kafka_bootstrap, [sp.topic_trades], partitions=2)
    ensure_topics(sp.kafka_bootstrap, [sp.topic_candles, sp.topic_trades_dlq, sp.topic_trades_late])
    _, end, _, sentinel_ts = prefill(sp.kafka_bootstrap, sp.topic_trades, repeat)
    out = run_flink(sp, end, sentinel_ts)
    rate = out["steady_trades_per_s"]
    return {
        **out,
        "partitions": {str(p): o for p, o in sorted(end.items())},
        "speedup_over_parallelism_1": rate / p1["steady_trades_per_s"],
        "per_core_efficiency": rate / 2 / p1["steady_trades_per_s"],
    }


def run_quix(s: Settings, delay_ms: int, sentinel_ts: int, idle_s: float = 8.0) -> dict[str, Any]:
    from quixstreams import Application
    from quixstreams.dataframe.windows import Count, Earliest, Latest, Max, Min, Sum

    from infra.kafka import read_all

    state = tempfile.mkdtemp(prefix="quix-")
    app = Application(
        broker_address=s.kafka_bootstrap,
        consumer_group=f"quix-{uuid.uuid4().hex[:6]}",
        auto_offset_reset="earliest",
        state_dir=state,
        use_changelog_topics=False,
        loglevel="WARNING",
    )
    topic_in = app.topic(
        s.topic_trades,
        value_deserializer="json",
        timestamp_extractor=lambda value, headers, ts, ttype: int(value["ts_ms"]),
    )
    topic_out = app.topic(s.topic_candles + "_quix", value_serializer="json")
    # Tansu's DescribeConfigs omits retention.ms, which Quix reads to size window state
    # (even with changelogs off); fill in Kafka's "infinite" so Quix can start.
    for t in (topic_in, topic_out):
        t.broker_config.extra_config.setdefault("retention.ms", "-1")

    def prepare(v: dict[str, Any]) -> dict[str, Any]:
        p, q = float(v["price"]), float(v["qty"])
        buy = v["side"] == "buy"
        return {
            "price": p,
            "qty": q,
            "pq": p * q,
            "buy_q": q if buy else 0.0,
            "sell_q": 0.0 if buy else q,
            "trade_id": v["trade_id"],
        }

    sdf = app.dataframe(topic_in).apply(prepare)
    sdf = (
        sdf.tumbling_window(duration_ms=60_000, grace_ms=delay_ms)
        .agg(
            open=Earliest("price"),
            close=Latest("price"),
            high=Max("price"),
            low=Min("price"),
            volume=Sum("qty"),
            quote_volume=Sum("pq"),
            trade_count=Count(),
            buy_volume=Sum("buy_q"),
            sell_volume=Sum("sell_q"),
            last_trade_id=Max("trade_id"),
        )
        .final()
    )
    sdf = sdf.apply(
        lambda v: {**v, "vwap": v["quote_volume"] / v["volume"], "emitted_at_s": time.time()}
    )
    sdf.to_topic(topic_out)
    t0 = time.perf_counter()
    app.run(timeout=idle_s)  # stops after idle_s without new input
    wall = time.perf_counter() - t0 - idle_s
    out = read_all(s.kafka_bootstrap, s.topic_candles + "_quix", idle_timeout_s=3)
    real = [c for c in out if c["start"] < sentinel_ts - 60_000]
    return {
        "wall_s_start_to_idle": wall,
        "candles_1m": len(real),
        "trades_in_1m_candles": sum(c["trade_count"] for c in real),
        **steady_rate([(c["emitted_at_s"], c["trade_count"]) for c in real]),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench.candles",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--repeat", type=int, default=5, help="replays of the 115,993 real trades")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "candles.json")
    ap.add_argument(
        "--no-parallelism2",
        dest="parallelism2",
        action="store_false",
        help="skip the Flink run at parallelism 2 on a 2-partition copy of the topic",
    )
    args = ap.parse_args(argv)
    state = Path(tempfile.mkdtemp(prefix="bench-candles-"))
    broker = TansuBroker(port=free_port(), state_dir=state)
    print(broker.start(), flush=True)
    try:
        s = Settings(
            kafka_bootstrap=broker.bootstrap,
            state_dir=state,
            topic_trades="bench_trades",
            topic_candles="bench_candles",
            topic_trades_dlq="bench_dlq",
            topic_trades_late="bench_late",
            group_id="bench",
        )
        from infra.kafka import ensure_topics

        ensure_topics(
            s.kafka_bootstrap,
            [
                s.topic_trades,
                s.topic_candles,
                s.topic_trades_dlq,
                s.topic_trades_late,
                s.topic_candles + "_quix",
            ],
        )
        t0 = time.perf_counter()
        n, end, n_sent, sentinel_ts = prefill(s.kafka_bootstrap, s.topic_trades, args.repeat)
        print(f"prefilled {n:,} trades in {time.perf_counter() - t0:.1f}s", flush=True)
        res: dict[str, Any] = {}
        res["raw_kafka_python"] = raw_kafka_python(s.kafka_bootstrap, s.topic_trades, n)
        print("raw kafka-python", res["raw_kafka_python"], flush=True)
        res["raw_confluent_kafka"] = raw_confluent(s.kafka_bootstrap, s.topic_trades, n)
        print("raw confluent-kafka", res["raw_confluent_kafka"], flush=True)
        res["flink"] = run_flink(s, end, sentinel_ts)
        print("flink", res["flink"], flush=True)
        sp = s.model_copy(
            update={
                "watermark_emit": "on-periodic",
                "topic_candles": s.topic_candles + "_periodic",
                "topic_trades_dlq": s.topic_trades_dlq + "_periodic",
                "topic_trades_late": s.topic_trades_late + "_periodic",
            }
        )
        ensure_topics(
            s.kafka_bootstrap, [sp.topic_candles, sp.topic_trades_dlq, sp.topic_trades_late]
        )
        res["flink_periodic_watermarks"] = run_flink(sp, end, sentinel_ts)
        print("flink on-periodic", res["flink_periodic_watermarks"], flush=True)
        res["flink_stage_profile"] = flink_stage_profile(s, end, n)
        print("flink profile", res["flink_stage_profile"], flush=True)
        res["quix"] = run_quix(s, s.watermark_delay_ms, sentinel_ts)
        print("quix", res["quix"], flush=True)
        if args.parallelism2:
            res["flink_parallelism_2"] = run_parallel(s, args.repeat, res["flink"])
            print("flink parallelism 2", res["flink_parallelism_2"], flush=True)
    finally:
        broker.stop()
    f, q = res["flink"]["steady_trades_per_s"], res["quix"]["steady_trades_per_s"]
    kp, ck = res["raw_kafka_python"]["msgs_per_s"], res["raw_confluent_kafka"]["msgs_per_s"]
    report = {
        "benchmark": "candles: Kafka trades -> 1m OHLCV -> Kafka",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": {
            p: version(p)
            for p in ("apache-flink", "quixstreams", "kafka-python", "confluent-kafka")
        },
        "broker": "Tansu 0.6 (memory storage), loopback, 1 partition",
        "input": {
            "file": "binance_trades_sample.parquet",
            "repeat": args.repeat,
            "trades": n - n_sent,
            "sentinel_trades": n_sent,
        },
        "settings": {
            "flink_parallelism": s.parallelism,
            "watermark_delay_ms": s.watermark_delay_ms,
            "watermark_emit": "flink: on-event (default); flink_periodic_watermarks: on-periodic",
        },
        "method": __doc__,
        "notes": [
            "Flink also computes 5m/15m/1h rollups, validation with DLQ and late routing in the "
            "same job; Quix computes 1m only, with float arithmetic (Flink: exact DECIMAL).",
            "Quix on Tansu needed one shim: Tansu does not report retention.ms in DescribeConfigs, "
            "so the benchmark sets it to -1 on Quix's topic objects before building the window.",
            "raw consumers are a single-threaded Python loop (kafka-python) and librdkafka "
            "(confluent-kafka), both json-decoding every message.",
        ],
        "results": res,
        "ratios": {
            "flink_over_quix": f / q,
            "flink_periodic_over_quix": res["flink_periodic_watermarks"]["steady_trades_per_s"] / q,
            "flink_over_raw_kafka_python": f / kp,
            "quix_over_raw_kafka_python": q / kp,
            "flink_over_raw_confluent": f / ck,
            **(
                {
                    "flink_parallelism_2_over_quix": res["flink_parallelism_2"][
                        "steady_trades_per_s"
                    ]
                    / q
                }
                if "flink_parallelism_2" in res
                else {}
            ),
        },
    }
    write_report(args.out, report)
    print(json.dumps(report["ratios"], indent=2))


if __name__ == "__main__":
    main()
