"""Checkpoint recovery on a real standalone Flink cluster.

The candles job (real trades, 3 passes) and the features job (real 1m klines) run on a
standalone cluster (JobManager + 1 TaskManager process with 2 slots), checkpointing every
second. A clean run gives the reference outputs. Then the same two jobs run again and the
TaskManager is SIGKILLed mid-replay (both jobs running, checkpoints completed, part of the
output written); a new TaskManager is started; both jobs restart from their last completed
checkpoint and finish. Their outputs go through the real writers into ClickHouse (the 18.16
server): the FINAL tables equal the clean run's (0 lost, 0 duplicated), while the Kafka
topics hold the re-emitted records (at-least-once sinks).

A second test takes a savepoint of the candles job mid-replay, cancels it and resumes it from
the savepoint (`flink run -s`). The resumed bounded source reads to its end offset but never
finishes (Kafka connector bug FLINK-31006: a restored enumerator never signals "no more
splits"), so once it has read everything the job is stopped with `--drain` (the watermark goes
to the end, every open window fires, as at the end of a bounded input): same candles as the
clean run.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from infra.clickhouse import ClickHouseStore, connect
from infra.flink_cluster import FlinkCluster
from infra.kafka import ensure_topics, read_all
from infra.local import ClickHouseServer, RedisServer, free_port
from infra.settings import REPO_ROOT, Settings
from jobs.flink.features import kline_message
from jobs.ingest.replay import load_trades, repeated_messages
from jobs.writers.candles import CandlesWriter
from jobs.writers.config import WriterConfig
from jobs.writers.features import FeatureWriter
from tests.conftest import CANDLES_CSV, TRADES_PARQUET

pytestmark = pytest.mark.integration
ROOT = REPO_ROOT
CANDLES_JOB = ROOT / "jobs" / "flink" / "candles.py"
FEATURES_JOB = ROOT / "jobs" / "flink" / "features.py"
PASSES = 3  # real trades replayed 3x (time-shifted): ~348k trades, ~50 s of candles job
BARS = 5_000  # 1m klines per symbol for the features job: 25,000 candles, ~40 s
# columns set by the clock, not by the data: differ between any two runs
CLOCK_COLUMNS = {"candles": "emitted_at", "features": "computed_at"}
KEYS = ("symbol", "timeframe", "window_start_ms")


# ------------------------------------------------------------------------------ fixtures
def standalone_cluster(state_dir: Path) -> Iterator[FlinkCluster]:
    """A JobManager + 1 TaskManager (2 slots) on random ports; stopped at the end, with any
    replacement TaskManager a test started."""
    s = Settings(
        state_dir=state_dir,
        flink_rest_port=free_port(),
        flink_rpc_port=free_port(),
        flink_taskmanagers=1,
        flink_slots_per_tm=2,
        flink_tm_memory="1800m",
    )
    c = FlinkCluster(s)
    c.start()
    yield c
    c.stop()
    for pid in c.taskmanager_pids():  # a replacement TaskManager started by a test
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster(state_dir: Path) -> Iterator[FlinkCluster]:
    yield from standalone_cluster(state_dir / "recovery")


def produce(bootstrap: str, topic: str, items: list[tuple[str, bytes]]) -> dict[int, int]:
    """Send (key, value) pairs; returns acknowledged end offsets per partition (not
    ListOffsets: Tansu's drops the last batch)."""
    from confluent_kafka import Producer

    end: dict[int, int] = {}
    errors: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            end[msg.partition()] = max(end.get(msg.partition(), 0), msg.offset() + 1)

    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 20})
    for i, (key, value) in enumerate(items):
        p.produce(topic, value, key=key.encode(), on_delivery=on_delivery)
        if i % 10_000 == 0:
            p.poll(0)
    assert p.flush(60) == 0
    assert not errors, errors[:3]
    return end


@dataclass
class Inputs:
    base: Settings
    trades: list[tuple[str, bytes]]
    klines: list[tuple[str, bytes]]

    @property
    def n_klines(self) -> int:
        return len(self.klines)


@pytest.fixture(scope="module")
def inputs(broker, state_dir: Path) -> Inputs:
    base = Settings(
        kafka_bootstrap=broker.bootstrap,
        state_dir=state_dir / "recovery",
        checkpoint_interval_ms=1_000,
        restart_delay_ms=1_000,
    )
    trades = [
        (m["symbol"], json.dumps(m).encode())
        for m in repeated_messages(load_trades(TRADES_PARQUET), PASSES)
    ]
    df = pd.read_csv(CANDLES_CSV).sort_values(["ts_ms", "symbol"])
    df = df.groupby("symbol").head(BARS)
    df["vwap"] = (df.high + df.low + df.close) / 3  # the 2021 file has no VWAP; a proxy
    klines = [(f"{r.symbol}|1m", json.dumps(kline_message(r)).encode()) for r in df.itertuples()]
    return Inputs(base, trades, klines)


@dataclass
class Run:
    """One run of both jobs: their settings (own output topics and groups)."""

    name: str
    candles: Settings
    features: Settings

    @classmethod
    def new(cls, inputs: Inputs, name: str) -> Run:
        tag = f"{name}_{uuid.uuid4().hex[:6]}"
        candles = inputs.base.model_copy(
            update={
                "topic_trades": f"rec_trades_{tag}",
                "topic_trades_dlq": f"rec_trades_dlq_{tag}",
                "topic_trades_late": f"rec_trades_late_{tag}",
                "topic_candles": f"rec_candles_{tag}",
                "topic_candles_dlq": f"rec_candles_dlq_{tag}",
                "group_id": f"rec_candles_{tag}",
                "candles_group_id": f"rec_cw_{tag}",
            }
        )
        features = inputs.base.model_copy(
            update={
                "topic_candles": f"rec_klines_{tag}",
                "topic_features": f"rec_features_{tag}",
                "topic_features_dlq": f"rec_features_dlq_{tag}",
                "group_id": f"rec_features_{tag}",
                "writer_group_id": f"rec_fw_{tag}",
            }
        )
        ensure_topics(
            inputs.base.kafka_bootstrap,
            [
                candles.topic_trades,
                features.topic_candles,
                candles.topic_trades_dlq,
                candles.topic_trades_late,
                candles.topic_candles,
                features.topic_features,
            ],
            1,
        )
        return cls(name, candles, features)

    def start(self, cluster: FlinkCluster, inputs: Inputs) -> dict[str, str]:
        """Submit both jobs (bounded at the inputs' sizes), wait until all their tasks run,
        then produce the inputs: both jobs replay at the same time. Returns name -> job id."""
        t0 = int(time.time() * 1000)
        with ThreadPoolExecutor(2) as pool:  # `flink run -py` of a Python job takes ~10-60 s
            futs = [
                pool.submit(self.submit_candles, cluster, inputs),
                pool.submit(self.submit_features, cluster, inputs),
            ]
            for f in futs:
                f.result()
        wait_for(lambda: len(job_ids(cluster, t0)) == 2, 60, "both jobs listed")
        ids = job_ids(cluster, t0)
        wait_for(lambda: all(tasks_running(cluster, j) for j in ids.values()), 120, "tasks")
        bs = inputs.base.kafka_bootstrap
        assert produce(bs, self.candles.topic_trades, inputs.trades) == {0: len(inputs.trades)}
        assert produce(bs, self.features.topic_candles, inputs.klines) == {0: inputs.n_klines}
        return ids

    def submit_candles(self, cluster: FlinkCluster, inputs: Inputs) -> None:
        rc = cluster.run_py(
            CANDLES_JOB,
            ["--end-offsets", f"0:{len(inputs.trades)}"],
            detach=True,
            settings_for_job=self.candles,
            timeout_s=240,
        )
        assert rc == 0, "flink run candles failed"

    def submit_features(self, cluster: FlinkCluster, inputs: Inputs, savepoint: str = "") -> None:
        rc = cluster.run_py(
            FEATURES_JOB,
            ["--end-offsets", f"0:{inputs.n_klines}"],
            detach=True,
            settings_for_job=self.features,
            timeout_s=240,
            from_savepoint=savepoint or None,
        )
        assert rc == 0, "flink run features failed"


def tasks_running(cluster: FlinkCluster, job_id: str) -> bool:
    detail = cluster.rest(f"/jobs/{job_id}")
    return detail["state"] == "RUNNING" and all(
        v["status"] == "RUNNING" for v in detail["vertices"]
    )


def count_topic(bootstrap: str, topic: str) -> int:
    """Messages in ``topic`` now (read to the end; Tansu's high watermark is approximate)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"count_{uuid.uuid4().hex[:6]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        c.assign([TopicPartition(topic, 0, 0)])
        n = 0
        while True:
            msgs = c.consume(10_000, timeout=1.0)
            if not msgs:
                return n
            for m in msgs:
                if m.error() is None:
                    n += 1
                elif m.error().code() == -191:  # _PARTITION_EOF
                    return n
    finally:
        c.close()


def wait_for(pred: Callable[[], bool], timeout_s: float, what: str) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if pred():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


JOB_NAMES = ("candleflow-candles", "candleflow-features")


def job_ids(cluster: FlinkCluster, since_ms: int) -> dict[str, str]:
    """Name -> id of the jobs started since ``since_ms``."""
    jobs = cluster.jobs()
    return {
        j["name"]: j["jid"] for j in jobs if j["start-time"] >= since_ms and j["name"] in JOB_NAMES
    }


def wait_finished(cluster: FlinkCluster, ids: dict[str, str], timeout_s: float) -> None:
    def done() -> bool:
        states = {j["jid"]: j["state"] for j in cluster.jobs()}
        bad = {n: states[j] for n, j in ids.items() if states[j] in ("FAILED", "CANCELED")}
        assert not bad, f"jobs ended badly: {bad}"
        return all(states[j] == "FINISHED" for j in ids.values())

    wait_for(done, timeout_s, f"jobs {sorted(ids)} to finish")


def write_to_clickhouse(
    run: Run, redis: RedisServer, ch: ClickHouseServer, tmp: Path
) -> ClickHouseStore:
    """The real writers: candles -> `candles`, features -> Feast + Redis + `features`."""
    db = f"rec_{run.name}_{uuid.uuid4().hex[:6]}"
    url = ch.url_for(db)
    cs = run.candles.model_copy(update={"clickhouse_url": url})
    fs = run.features.model_copy(
        update={
            "clickhouse_url": url,
            "redis_host": redis.host,
            "redis_port": redis.port,
            "feast_dir": tmp / f"feast_{run.name}",
            "feast_project": f"rec{uuid.uuid4().hex[:6]}",
        }
    )
    cfg = dict(until_idle_s=3.0, max_wait_ms=500)
    w1 = CandlesWriter(cs, WriterConfig.from_settings(cs, group_id=cs.candles_group_id, **cfg))
    with w1:
        w1.run()
    w2 = FeatureWriter(fs, WriterConfig.from_settings(fs, **cfg))
    with w2:
        w2.run()
    return connect(url)


def final_rows(store: ClickHouseStore, table: str) -> list[dict[str, Any]]:
    order = ", ".join(KEYS)
    rows = store.query(f"SELECT * FROM {table} FINAL ORDER BY {order}")
    for r in rows:
        r.pop(CLOCK_COLUMNS[table])
    return rows


def topic_keys(bootstrap: str, topic: str, expected: int) -> list[tuple[Any, ...]]:
    msgs = read_all(bootstrap, topic, expected=expected, idle_timeout_s=3)
    return [tuple(m[k] for k in KEYS) for m in msgs]


@dataclass
class Reference:
    candles: list[dict[str, Any]]
    features: list[dict[str, Any]]
    n_candles: int


@pytest.fixture(scope="module")
def clean(cluster, inputs, redis_server, clickhouse_server, tmp_path_factory) -> Reference:
    """Both jobs without a failure: the reference."""
    run = Run.new(inputs, "clean")
    wait_finished(cluster, run.start(cluster, inputs), 400)
    bs = inputs.base.kafka_bootstrap
    n_candles = count_topic(bs, run.candles.topic_candles)
    # a clean run emits every window exactly once and every kline's features once
    keys = topic_keys(bs, run.candles.topic_candles, n_candles)
    assert len(keys) == len(set(keys)) == n_candles > 0
    fkeys = topic_keys(bs, run.features.topic_features, inputs.n_klines)
    assert len(fkeys) == len(set(fkeys)) == inputs.n_klines
    store = write_to_clickhouse(run, redis_server, clickhouse_server, tmp_path_factory.mktemp("c"))
    ref = Reference(final_rows(store, "candles"), final_rows(store, "features"), n_candles)
    store.close()
    assert len(ref.candles) == n_candles and len(ref.features) == inputs.n_klines
    return ref


def assert_equal_to_clean(store: ClickHouseStore, ref: Reference) -> dict[str, int]:
    """FINAL tables == the clean run's: 0 lost, 0 duplicated. Returns raw row counts."""
    out = {}
    for table, want in (("candles", ref.candles), ("features", ref.features)):
        got = final_rows(store, table)
        got_keys = [tuple(r[k] for k in KEYS) for r in got]
        want_keys = [tuple(r[k] for k in KEYS) for r in want]
        assert len(set(got_keys)) == len(got_keys), f"{table}: duplicated keys under FINAL"
        lost = set(want_keys) - set(got_keys)
        extra = set(got_keys) - set(want_keys)
        assert not lost and not extra, f"{table}: {len(lost)} lost, {len(extra)} unexpected"
        diff = [(w, g) for w, g in zip(want, got, strict=True) if w != g]
        assert not diff, f"{table}: {len(diff)} rows differ, e.g. {diff[0]}"
        out[table] = int(store.query(f"SELECT count() AS n FROM {table}")[0]["n"])
    return out


def high_watermark(bootstrap: str, topic: str) -> int:
    """The end offset of ``topic`` now: cheap, and within one batch of the count (Tansu's end
    offset is the last batch's base + 1), which is all a mid-replay check needs. Reading the
    topic instead took long enough under load that a job could finish between two polls."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"hw_{uuid.uuid4().hex[:6]}"})
    try:
        return int(c.get_watermark_offsets(TopicPartition(topic, 0), timeout=5)[1])
    finally:
        c.close()


def progress_estimate(bs: str, run: Run) -> tuple[int, int]:
    return high_watermark(bs, run.candles.topic_candles), high_watermark(
        bs, run.features.topic_features
    )


def progress(bs: str, run: Run) -> tuple[int, int]:
    return count_topic(bs, run.candles.topic_candles), count_topic(bs, run.features.topic_features)


# --------------------------------------------------------------------------------- tests
def test_sigkill_taskmanager_mid_replay_restores_from_checkpoint(
    cluster, inputs, clean, redis_server, clickhouse_server, tmp_path
) -> None:
    bs = inputs.base.kafka_bootstrap
    run = Run.new(inputs, "killed")
    ids = run.start(cluster, inputs)

    # mid-replay: both RUNNING, >= 2 completed checkpoints each, 5-80 % of the output out
    seen: dict[str, Any] = {}

    def mid_replay() -> bool:
        states = {j["jid"]: j["state"] for j in cluster.jobs()}
        assert all(states[j] != "FINISHED" for j in ids.values()), (
            f"a job finished before the kill: {states}, last seen {seen}"
        )
        if not all(states[j] == "RUNNING" for j in ids.values()):
            return False
        cps = {n: cluster.checkpoints(j)["completed"] for n, j in ids.items()}
        nc, nf = progress_estimate(bs, run)
        seen.update(checkpoints=cps, candles=nc, features=nf)
        return (
            min(cps.values()) >= 2
            and 0.05 * clean.n_candles <= nc <= 0.8 * clean.n_candles
            and 0.05 * inputs.n_klines <= nf <= 0.8 * inputs.n_klines
        )

    wait_for(mid_replay, 240, "both jobs mid-replay with completed checkpoints")
    before = {n: cluster.checkpoints(j) for n, j in ids.items()}
    [tm] = cluster.taskmanager_pids()
    os.kill(tm, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: cluster.overview()["taskmanagers"] == 0, 60, "the TaskManager to be lost")
    cluster.add_taskmanager()
    wait_finished(cluster, ids, 400)
    recovered_s = time.monotonic() - killed_at

    for name, jid in ids.items():
        cp = cluster.checkpoints(jid)
        assert cp["restored"] >= 1, f"{name} did not restore from a checkpoint: {cp}"
        assert cp["restored_from"], cp

    # the topics hold re-emitted records (at-least-once sinks) ...
    n_candles, n_features = progress(bs, run)
    assert n_candles >= clean.n_candles and n_features >= inputs.n_klines
    # ... and ClickHouse FINAL equals the clean run: 0 lost, 0 duplicated
    store = write_to_clickhouse(run, redis_server, clickhouse_server, tmp_path)
    try:
        raw = assert_equal_to_clean(store, clean)
    finally:
        store.close()
    print(
        f"\nkilled at {seen} (checkpoints before: "
        f"{ {n: (c['completed'], c['latest_id']) for n, c in before.items()} }); "
        f"recovered and finished {recovered_s:.0f} s later; topic records: candles "
        f"{n_candles} (clean {clean.n_candles}), features {n_features} (clean "
        f"{inputs.n_klines}); ClickHouse raw rows {raw}, FINAL = clean"
    )


def source_read(cluster: FlinkCluster, job_id: str) -> int:
    return int(cluster.rest(f"/jobs/{job_id}")["vertices"][0]["metrics"]["read-records"])


def test_savepoint_cancel_resume_then_drain(
    cluster, inputs, clean, redis_server, clickhouse_server, tmp_path
) -> None:
    bs = inputs.base.kafka_bootstrap
    run = Run.new(inputs, "savepoint")
    ids = run.start(cluster, inputs)
    cid = ids["candleflow-candles"]
    wait_for(
        lambda: 0.05 * clean.n_candles <= count_topic(bs, run.candles.topic_candles),
        240,
        "the candles job mid-replay",
    )
    path = cluster.savepoint(cid)
    cluster.cancel(cid)
    wait_for(lambda: cluster.find_job(cid)["state"] == "CANCELED", 60, "the cancelled job")
    stopped_at = count_topic(bs, run.candles.topic_candles)
    assert Path(path.removeprefix("file:")).exists(), path

    t1 = int(time.time() * 1000)
    rc = cluster.run_py(
        CANDLES_JOB,
        ["--end-offsets", f"0:{len(inputs.trades)}"],
        detach=True,
        settings_for_job=run.candles,
        timeout_s=240,
        from_savepoint=path,
    )
    assert rc == 0
    wait_for(lambda: "candleflow-candles" in job_ids(cluster, t1), 60, "the resumed job")
    resumed = job_ids(cluster, t1)["candleflow-candles"]
    cp = cluster.checkpoints(resumed)
    assert cp["restored"] >= 1 and cp["restored_from"], cp

    # the source reads to its end offset, then waits forever (FLINK-31006): wait until its
    # read count has been still for 10 s, then stop with --drain
    last: list[tuple[int, float]] = []

    def source_done() -> bool:
        n = source_read(cluster, resumed)
        if not last or last[-1][0] != n:
            last.append((n, time.monotonic()))
            return False
        return n > 0 and time.monotonic() - last[-1][1] >= 10

    wait_for(source_done, 400, "the resumed source to read to its end offset")
    read_after_resume = last[-1][0]
    cluster.savepoint(resumed, stop=True, drain=True)
    wait_for(lambda: cluster.find_job(resumed)["state"] == "FINISHED", 60, "the drained job")
    wait_finished(cluster, {"features": ids["candleflow-features"]}, 400)

    store = write_to_clickhouse(run, redis_server, clickhouse_server, tmp_path)
    try:
        assert_equal_to_clean(store, clean)
    finally:
        store.close()
    print(
        f"\nsavepoint after {stopped_at} candles, cancelled; resumed from {path}: "
        f"{read_after_resume} trades read, then drained; ClickHouse FINAL = clean"
    )
