"""Features benchmark: the Flink features job vs the pure TA-Lib batch computation.

    python -m bench.features [--bars 1500] [--out bench/results/features.json]

One run, one broker, real data (``binance_1m_top5_2021.csv.gz``, the first ``--bars`` 1m
candles of each of the 5 symbols, in event-time order across symbols, the way the candles
job emits them; VWAP proxy (H+L+C)/3 because the file has none):

1. Ceiling: ``udfs.indicators.compute_series`` on the same candles, in this process: the
   exact definition the job computes (each feature on exactly its last K bars). For
   context also TA-Lib's vectorised full-history calls (one call per indicator per series;
   not the same definition for recursive indicators, so not a like-for-like ceiling).
2. Throughput: the candles are prefilled into a topic; for each Python-execution config
   the job runs as a user runs it (``candleflow features run --end-offsets ...`` in a
   fresh process, settings from ``CANDLEFLOW_*`` env), bounded to the prefilled offsets.
   Steady state = feature rows whose ``computed_at`` (CURRENT_TIMESTAMP in the job, after
   the UDF) falls in the middle 80% of the emission span / that span. JVM and job start
   are before the first emission and excluded (reported as wall time). Every emitted row
   is compared with the ceiling's values (must be bit-identical).
3. Latency: the job is started on a topic holding only warm-up history (--warmup-bars per
   symbol); once it has emitted those, candles are produced at a fixed rate (--rate
   candles/s, far below the job's capacity) in bursts, one per bar time (all symbols of a
   minute together, as the candles job emits them when a window closes), each candle stamped
   with the wall time just before its burst is sent. Per candle: emit latency = computed_at
   - sent; delivered latency = time our consumer received the feature row - sent (adds the
   sink's and broker's share).
   Reported p50/p99/max for each config.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import machine_info, write_report
from infra.local import TansuBroker, free_port
from infra.settings import REPO_ROOT, SHARED_DATA, Settings
from jobs.flink.features import kline_message

HERE = Path(__file__).resolve().parent
CANDLES = SHARED_DATA / "binance_1m_top5_2021.csv.gz"

# Python-execution configs compared (env overrides of infra.settings.Settings)
CONFIGS: dict[str, dict[str, str]] = {
    # the default: periodic watermarks (200 ms), bundles of up to 100k rows / 100 ms (Flink's
    # size, our time), Arrow batch 10k, process mode
    "default": {},
    # one watermark per candle (what the candles job uses): a bundle flush per candle
    "on_event_watermarks": {"FEATURES_WATERMARK_EMIT": "on-event"},
    # Flink's own bundle time (1 s), the default before 2026-12-02
    "bundle_1000ms": {"PYTHON_BUNDLE_TIME_MS": "1000"},
    "bundle_1000rows_arrow_1000": {"PYTHON_BUNDLE_SIZE": "1000", "PYTHON_ARROW_BATCH_SIZE": "1000"},
    "thread_mode": {"PYTHON_EXECUTION_MODE": "thread"},
    "watermark_interval_50ms": {"WATERMARK_INTERVAL_MS": "50"},
    "fetch_max_wait_500ms": {"KAFKA_FETCH_MAX_WAIT_MS": "500"},  # Kafka's default
}


# ----------------------------------------------------------------------------- data
def load_candles(bars: int) -> pd.DataFrame:
    df = pd.read_csv(CANDLES)
    df = df.sort_values(["ts_ms", "symbol"]).groupby("symbol").head(bars)
    df["vwap"] = (df.high + df.low + df.close) / 3
    return df.sort_values(["ts_ms", "symbol"]).reset_index(drop=True)


def producer(bootstrap: str, linger_ms: int) -> Any:
    from confluent_kafka import Producer

    return Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": linger_ms, "batch.size": 1_000_000}
    )


def produce(p: Any, topic: str, msgs: list[dict[str, Any]]) -> None:
    for m in msgs:
        while True:
            try:
                p.produce(topic, json.dumps(m).encode(), f"{m['symbol']}|1m".encode())
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    p.flush()


# ----------------------------------------------------------------------------- ceiling
def batch_ceiling(df: pd.DataFrame) -> tuple[dict[str, Any], pd.DataFrame]:
    import talib

    from udfs.indicators import FEATURE_NAMES, INPUTS, compute_series

    parts, t0 = [], time.perf_counter()
    for sym, g in df.groupby("symbol", sort=False):
        cols = compute_series({k: g[k].to_numpy(np.float64) for k in INPUTS})
        parts.append(pd.DataFrame(cols).assign(symbol=sym, window_start_ms=g.ts_ms.to_numpy()))
    exact_s = time.perf_counter() - t0
    want = pd.concat(parts).set_index(["symbol", "window_start_ms"])[FEATURE_NAMES]

    t0 = time.perf_counter()
    for _, g in df.groupby("symbol", sort=False):
        h, lo, c, v = (g[k].to_numpy(np.float64) for k in ("high", "low", "close", "volume"))
        for p in (10, 20, 50):
            talib.SMA(c, p)
        for p in (12, 26, 50):
            talib.EMA(c, p)
        talib.RSI(c, 14), talib.MACD(c, 12, 26, 9), talib.BBANDS(c, 20, 2.0, 2.0)
        talib.ATR(h, lo, c, 14), talib.ADX(h, lo, c, 14), talib.STOCH(h, lo, c, 14, 3, 0, 3, 0)
        talib.OBV(c, v), talib.MFI(h, lo, c, v, 14), talib.CCI(h, lo, c, 20)
        talib.WILLR(h, lo, c, 14), talib.ROC(c, 10)
        lr = np.diff(np.log(c))
        pd.Series(lr).rolling(30).std(ddof=0), pd.Series(v).rolling(20).std(ddof=0)
    vec_s = time.perf_counter() - t0
    n = len(df)
    return {
        "candles": n,
        "same_definition_compute_series": {"seconds": exact_s, "candles_per_s": n / exact_s},
        "talib_vectorised_full_history": {
            "seconds": vec_s,
            "candles_per_s": n / vec_s,
            "note": "context only: recursive indicators use all history, not the K-bar window",
        },
    }, want


# ----------------------------------------------------------------------------- the job
def job_env(s: Settings, topic_candles: str, topic_features: str, cfg: dict[str, str]) -> dict:
    env = dict(os.environ)
    env.update(
        {
            "CANDLEFLOW_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
            "CANDLEFLOW_STATE_DIR": str(s.state_dir),
            "CANDLEFLOW_TOPIC_CANDLES": topic_candles,
            "CANDLEFLOW_TOPIC_FEATURES": topic_features,
            "CANDLEFLOW_GROUP_ID": f"bench-{uuid.uuid4().hex[:6]}",
        }
    )
    env.update({f"CANDLEFLOW_{k}": v for k, v in cfg.items()})
    return env


def start_job(env: dict[str, str], end: int, log: Path) -> subprocess.Popen[bytes]:
    cli = Path(sys.executable).parent / "candleflow"
    cmd = [str(cli), "features", "run", "--end-offsets", f"0:{end}"]
    return subprocess.Popen(
        cmd, env=env, cwd=REPO_ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )


def iso_to_s(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Collector(threading.Thread):
    """Reads a topic from the start in the background; keeps (receive time, row)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic = bootstrap, topic
        self.rows: list[tuple[float, dict[str, Any]]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer(
            {
                "bootstrap.servers": self.bootstrap,
                "group.id": f"collect-{uuid.uuid4().hex[:6]}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 5,
            }
        )
        c.assign([TopicPartition(self.topic, 0, 0)])
        while not self.stop.is_set():
            for m in c.consume(num_messages=1000, timeout=0.05):
                if m.error() is None:
                    self.rows.append((time.time(), json.loads(m.value())))
        c.close()


def compare(rows: list[dict[str, Any]], want: pd.DataFrame) -> dict[str, int]:
    from udfs.indicators import FEATURE_NAMES

    got = pd.DataFrame(rows).set_index(["symbol", "window_start_ms"])[FEATURE_NAMES]
    got = got.astype(float).reindex(want.index)
    a, b = got.to_numpy(), want.to_numpy()
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    return {
        "rows": len(rows),
        "values_compared": int(same.size),
        "values_differing": int((~same).sum()),
    }


def throughput_run(
    s: Settings, name: str, cfg: dict[str, str], topic: str, n: int, want: pd.DataFrame, logs: Path
) -> dict[str, Any]:
    from infra.kafka import ensure_topics

    out = f"bench_features_{name}"
    ensure_topics(s.kafka_bootstrap, [out])
    col = Collector(s.kafka_bootstrap, out)
    col.start()
    t0 = time.perf_counter()
    proc = start_job(job_env(s, topic, out, cfg), n, logs / f"{name}.log")
    rc = proc.wait()
    wall = time.perf_counter() - t0
    deadline = time.time() + 30
    while len(col.rows) < n and time.time() < deadline:
        time.sleep(0.2)
    col.stop.set()
    col.join()
    rows = [r for _, r in col.rows]
    if rc != 0 or not rows:
        tail = (logs / f"{name}.log").read_text()[-2000:]
        return {"error": f"exit {rc}, {len(rows)} rows", "log_tail": tail}
    ts = sorted(iso_to_s(r["computed_at"]) for r in rows)
    t_a, t_b = ts[0] + 0.1 * (ts[-1] - ts[0]), ts[0] + 0.9 * (ts[-1] - ts[0])
    k = sum(1 for t in ts if t_a <= t <= t_b)
    return {
        "config": cfg,
        "wall_s_process_start_to_exit": wall,
        "emission_span_s": ts[-1] - ts[0],
        "steady_candles_per_s": k / (t_b - t_a) if t_b > t_a else float("nan"),
        "stream_vs_batch": compare(rows, want),
    }


def pct(x: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(x) * 1000.0, q))


def latency_run(
    s: Settings,
    name: str,
    cfg: dict[str, str],
    df: pd.DataFrame,
    warmup_bars: int,
    rate: float,
    logs: Path,
) -> dict[str, Any]:
    from infra.kafka import ensure_topics

    topic_in, topic_out = f"bench_lat_candles_{name}", f"bench_lat_features_{name}"
    ensure_topics(s.kafka_bootstrap, [topic_in, topic_out])
    msgs = [kline_message(r) for r in df.itertuples(index=False)]
    nsym = df.symbol.nunique()
    warm, paced = msgs[: warmup_bars * nsym], msgs[warmup_bars * nsym :]
    produce(producer(s.kafka_bootstrap, 20), topic_in, warm)
    col = Collector(s.kafka_bootstrap, topic_out)
    col.start()
    proc = start_job(job_env(s, topic_in, topic_out, cfg), len(msgs), logs / f"lat_{name}.log")
    deadline = time.time() + 180
    # with per-candle watermarks the last bar's other symbols wait for a newer bar: allow it
    need = len(warm) - nsym
    while len(col.rows) < need and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)
    if len(col.rows) < need:
        proc.kill()
        col.stop.set()
        return {"error": f"warm-up rows {len(col.rows)}/{len(warm)}"}
    p = producer(s.kafka_bootstrap, 0)
    sent: dict[tuple[str, int], float] = {}
    bursts: dict[int, list[dict[str, Any]]] = {}
    for m in paced:  # one burst per bar time, as the candles job emits a closed minute
        bursts.setdefault(m["window_start_ms"], []).append(m)
    t_next = time.perf_counter()
    for burst in bursts.values():
        t_next += len(burst) / rate
        while (d := t_next - time.perf_counter()) > 0:
            time.sleep(min(d, 0.002))
        now = time.time()
        for m in burst:
            sent[(m["symbol"], m["window_start_ms"])] = now
            p.produce(topic_in, json.dumps(m).encode(), f"{m['symbol']}|1m".encode())
        p.poll(0)
        p.flush()
    p.flush()
    rc = proc.wait(timeout=300)
    deadline = time.time() + 30
    while len(col.rows) < len(msgs) and time.time() < deadline:
        time.sleep(0.2)
    col.stop.set()
    col.join()
    emit, deliv = [], []
    for recv, r in col.rows:
        t = sent.get((r["symbol"], r["window_start_ms"]))
        if t is not None:
            emit.append(iso_to_s(r["computed_at"]) - t)
            deliv.append(recv - t)
    if rc != 0 or not emit:
        return {"error": f"exit {rc}, {len(emit)} paced rows"}
    return {
        "config": cfg,
        "paced_candles": len(paced),
        "rows_matched": len(emit),
        "emit_latency_ms": {"p50": pct(emit, 50), "p99": pct(emit, 99), "max": pct(emit, 100)},
        "delivered_latency_ms": {
            "p50": pct(deliv, 50),
            "p99": pct(deliv, 99),
            "max": pct(deliv, 100),
        },
    }


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench.features",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--bars", type=int, default=1500, help="1m candles per symbol (5 symbols)")
    ap.add_argument("--warmup-bars", type=int, default=150, help="history before paced latency")
    ap.add_argument("--latency-bars", type=int, default=100, help="paced bars per symbol")
    ap.add_argument("--rate", type=float, default=20.0, help="paced candles/s (all symbols)")
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset")
    ap.add_argument(
        "--latency-configs",
        default="default,bundle_1000ms,on_event_watermarks,watermark_interval_50ms",
        help="configs also measured for latency",
    )
    ap.add_argument("--out", type=Path, default=HERE / "results" / "features.json")
    args = ap.parse_args(argv)

    df = load_candles(args.bars)
    print(f"{len(df):,} real 1m candles, {df.symbol.nunique()} symbols", flush=True)
    ceiling, want = batch_ceiling(df)
    print("batch", json.dumps(ceiling), flush=True)

    state = Path(tempfile.mkdtemp(prefix="bench-features-"))
    logs = state / "logs"
    logs.mkdir(parents=True)
    broker = TansuBroker(port=free_port(), state_dir=state)
    print(broker.start(), flush=True)
    res: dict[str, Any] = {"batch": ceiling, "flink": {}, "latency": {}}
    try:
        s = Settings(kafka_bootstrap=broker.bootstrap, state_dir=state)
        from infra.kafka import ensure_topics

        topic = "bench_candles"
        ensure_topics(s.kafka_bootstrap, [topic])
        produce(
            producer(s.kafka_bootstrap, 50),
            topic,
            [kline_message(r) for r in df.itertuples(index=False)],
        )
        for name in filter(None, args.configs.split(",")):
            res["flink"][name] = throughput_run(s, name, CONFIGS[name], topic, len(df), want, logs)
            print(name, json.dumps(res["flink"][name])[:600], flush=True)
        lat_df = load_candles(args.warmup_bars + args.latency_bars)
        for name in filter(None, args.latency_configs.split(",")):
            res["latency"][name] = latency_run(
                s, name, CONFIGS[name], lat_df, args.warmup_bars, args.rate, logs
            )
            print("latency", name, json.dumps(res["latency"][name]), flush=True)
    finally:
        broker.stop()

    ceil = ceiling["same_definition_compute_series"]["candles_per_s"]
    report = {
        "benchmark": "features: Kafka candles -> 30 features (ARRAY_AGG OVER, pandas UDF) -> Kafka",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "versions": {p: version(p) for p in ("apache-flink", "ta-lib", "numpy", "pyarrow")},
        "broker": "Tansu 0.6 (memory storage), loopback, 1 partition",
        "input": {"file": CANDLES.name, "bars_per_symbol": args.bars, "candles": len(df)},
        "method": __doc__,
        "results": res,
        "ratios_to_ceiling": {
            k: v["steady_candles_per_s"] / ceil
            for k, v in res["flink"].items()
            if "steady_candles_per_s" in v
        },
    }
    write_report(args.out, report)
    print(json.dumps(report["ratios_to_ceiling"], indent=2))


if __name__ == "__main__":
    main()
