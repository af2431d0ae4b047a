"""A broker that lost data does not make a writer silently start over. The local broker
(Tansu, memory storage) drops every topic and committed offset when it restarts: the candles
writer, run again after such a restart, stops with a clear error instead of re-reading the
new log from offset 0 as if nothing had happened."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from infra.clickhouse import connect
from infra.connectors import Endpoints
from infra.kafka import ensure_topics
from infra.local import TansuBroker, free_port
from infra.settings import REPO_ROOT, Settings
from tests.integration.jobs.writers.test_writer_poison import (
    CLI,
    committed,
    env_of,
    good_candles,
    produce,
)

pytestmark = pytest.mark.integration


def write_candles(s: Settings, log: Path) -> tuple[int, str]:
    env = dict(os.environ) | env_of(
        s, "kafka_bootstrap", "state_dir", "clickhouse_url", "topic_candles",
        "topic_candles_dlq", "candles_group_id",
    ) | {"CANDLEFLOW_METRICS_PORT": "0", "COLUMNS": "400", "PYTHONUNBUFFERED": "1"}  # fmt: skip
    with open(log, "wb") as out:
        res = subprocess.run(
            [CLI, "candles", "write", "--until-idle", "3", "--max-wait-ms", "300"],
            env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, timeout=300,
        )  # fmt: skip
    return res.returncode, log.read_text()


def test_writer_stops_on_a_broker_that_lost_its_data(tmp_path: Path) -> None:
    port = free_port()
    tag = uuid.uuid4().hex[:8]
    s = Settings(
        kafka_bootstrap=f"127.0.0.1:{port}",
        state_dir=tmp_path / "state",
        clickhouse_url=f"chdb://{tmp_path / 'chdb'}",
        topic_candles=f"candles_{tag}",
        topic_candles_dlq=f"candles_dlq_{tag}",
        candles_group_id=f"cw_{tag}",
    )
    base = good_candles()[0]  # one real candle, shifted to 600 consecutive minutes
    good = [
        json.dumps(
            base
            | {
                "window_start_ms": base["window_start_ms"] + i * 60_000,
                "window_end_ms": base["window_end_ms"] + i * 60_000,
            }
        ).encode()
        for i in range(600)
    ]
    first, backlog, later = good[:300], good[300:500], good[500:600]
    broker = TansuBroker(port=port, state_dir=tmp_path / "broker")
    broker.start()
    try:
        ensure_topics(s.kafka_bootstrap, [s.topic_candles, s.topic_candles_dlq])
        produce(s.kafka_bootstrap, s.topic_candles, first)
        rc, text = write_candles(s, tmp_path / "w1.log")
        assert rc == 0, text[-3000:]
        assert committed(s.kafka_bootstrap, s.candles_group_id, s.topic_candles) == 300
        produce(s.kafka_bootstrap, s.topic_candles, backlog)  # acknowledged, not consumed
    finally:
        broker.stop()  # a restart: memory storage keeps nothing
    broker = TansuBroker(port=port, state_dir=tmp_path / "broker")
    broker.start()
    try:
        ensure_topics(s.kafka_bootstrap, [s.topic_candles, s.topic_candles_dlq])
        produce(s.kafka_bootstrap, s.topic_candles, later)  # the log now ends at 100 < 300
        rc, text = write_candles(s, tmp_path / "w2.log")
    finally:
        broker.stop()
    assert rc != 0, text[-3000:]
    assert "lost data" in text and "committed offset 300" in text, text[-3000:]
    with connect(s.clickhouse_url) as store:  # nothing of the new log was written
        n = store.query("SELECT count() AS n FROM candles FINAL")[0]["n"]
    assert n == 300


def test_flink_job_stops_on_a_broker_that_lost_its_data(tmp_path: Path) -> None:
    """The candles job (local MiniCluster, checkpointed) has read and checkpointed 300 trades
    when the broker restarts and loses them; the recreated topic gets 100 new trades. Flink's
    source does not notice (Tansu answers its fetch at offset 300 with nothing): the job
    would wait forever, or, on a broker that answers out-of-range, reset to offset 0 with
    'earliest-offset'. The job's handle sees the topic recreated (new topic id), cancels the
    job and raises BrokerReset; the new log's trades make no candles."""
    from infra.kafka import BrokerReset, read_all
    from jobs.flink import candles
    from jobs.ingest.replay import load_trades, repeated_messages
    from tests.conftest import TRADES_PARQUET

    port = free_port()
    tag = uuid.uuid4().hex[:8]
    s = Settings(
        kafka_bootstrap=f"127.0.0.1:{port}",
        state_dir=tmp_path / "state",
        topic_trades=f"trades_{tag}",
        topic_trades_dlq=f"trades_dlq_{tag}",
        topic_trades_late=f"trades_late_{tag}",
        topic_candles=f"candles_{tag}",
        group_id=f"candles_{tag}",
        checkpoint_interval_ms=1_000,
    )
    topics = [s.topic_trades, s.topic_trades_dlq, s.topic_trades_late, s.topic_candles]
    trades = [json.dumps(m).encode() for m in repeated_messages(load_trades(TRADES_PARQUET))]
    broker = TansuBroker(port=port, state_dir=tmp_path / "broker")
    broker.start()
    ensure_topics(s.kafka_bootstrap, topics)
    produce(s.kafka_bootstrap, s.topic_trades, trades[:300])
    handle = candles.submit(Endpoints(s))  # unbounded
    job = handle.result.get_job_client()
    try:
        assert set(handle.watch) == {s.topic_trades} and handle.watch[s.topic_trades]
        deadline = time.monotonic() + 120  # a checkpoint commits the source's offsets
        while committed(s.kafka_bootstrap, s.group_id, s.topic_trades) != 300:
            assert time.monotonic() < deadline, "the job never committed offset 300"
            time.sleep(0.5)
        broker.stop()  # a restart: memory storage keeps nothing
        broker = TansuBroker(port=port, state_dir=tmp_path / "broker")
        broker.start()
        ensure_topics(s.kafka_bootstrap, topics)
        produce(s.kafka_bootstrap, s.topic_trades, trades[300:400])  # the log ends at 100
        t0 = time.monotonic()
        with pytest.raises(BrokerReset) as reset:
            handle.wait()
        took = time.monotonic() - t0
        candles_out = read_all(s.kafka_bootstrap, s.topic_candles, idle_timeout_s=2)
    finally:
        with contextlib.suppress(Exception):  # a MiniCluster ends with its job
            job.cancel().result()
        broker.stop()
    assert "cancelled" in str(reset.value), reset.value
    assert f"topic {s.topic_trades}" in str(reset.value), reset.value
    assert "lost" in str(reset.value), reset.value
    assert candles_out == [], candles_out[:3]
    print(f"\nBrokerReset {took:.1f} s after the restart: {reset.value}")
