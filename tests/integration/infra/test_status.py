"""`candleflow status` against a real Tansu broker and an embedded ClickHouse (chDB):
topics with end offsets, a writer group's committed offsets and lag, freshness per stage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from infra.clickhouse import connect
from infra.freshness import freshness_rows
from infra.local import TansuBroker, free_port
from infra.settings import REPO_ROOT, Settings
from infra.status import collect

pytestmark = pytest.mark.integration


def test_status_real_broker_and_chdb(broker: TansuBroker, tmp_path: Path) -> None:
    from confluent_kafka import Consumer, Producer, TopicPartition

    from infra.kafka import ensure_topics

    tag = uuid.uuid4().hex[:8]
    s = Settings(
        kafka_bootstrap=broker.bootstrap,
        state_dir=tmp_path,
        topic_features=f"features_{tag}",
        writer_group_id=f"fw_{tag}",
        flink_rest_port=free_port(),
        redis_port=free_port(),
        metrics_port=0,
    )
    ensure_topics(s.kafka_bootstrap, [s.topic_features])
    p = Producer({"bootstrap.servers": s.kafka_bootstrap, "linger.ms": 0})
    for i in range(10):
        p.produce(s.topic_features, f'{{"i": {i}}}'.encode())
        p.flush()  # one batch per record: ListOffsets' end is exact on Tansu then
    c = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": s.writer_group_id})
    c.commit(offsets=[TopicPartition(s.topic_features, 0, 7)], asynchronous=False)
    c.close()

    now = int(time.time() * 1000)
    end = now - now % 60_000
    with connect(s) as store:
        store.migrate()
        rows = freshness_rows(
            "feature_redis",
            [
                ("BTCUSDT", "1m", end - 60_000 * k, end - 60_000 * k + 5_000 + 100 * k)
                for k in range(5)
            ],
            settings=s,
            observed_by="test",
        )
        rows += freshness_rows(
            "candle", [("BTCUSDT", "1m", end, end + 5_020)], settings=s, observed_by="test"
        )
        store.insert("pipeline_freshness", rows)

    rep = collect(s, minutes=60)
    k = rep["kafka"]
    assert k["state"] == "running" and k["approx"] is True
    assert k["topics"][s.topic_features] == {"partitions": 1, "end_offsets": {"0": 10}}
    g = k["groups"][s.writer_group_id]
    assert g["setting"] == "writer_group_id"
    assert g["committed"] == {f"{s.topic_features}[0]": {"committed": 7, "end": 10, "lag": 3}}
    assert g["lag"] == 3
    assert rep["flink"]["state"].startswith("not running")
    fr = rep["freshness"]
    assert fr["state"] == "ok", fr
    fs = fr["stages"]["feature_redis"]
    assert fs["last_window_end_ms"] == end
    q = fs["recent"]["1m"]
    assert q["n"] == 5 and q["max_ms"] == 400  # lag = 100 * k (delay 5000 from settings)
    assert 100 <= q["p50_ms"] <= 300 and 300 <= q["p99_ms"] <= 400
    assert fr["stages"]["candle"]["recent"]["1m"]["max_ms"] == 20

    # the same through the CLI (human output), settings from the environment
    env = os.environ | {
        "CANDLEFLOW_STATE_DIR": str(tmp_path),
        "CANDLEFLOW_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
        "CANDLEFLOW_TOPIC_FEATURES": s.topic_features,
        "CANDLEFLOW_WRITER_GROUP_ID": s.writer_group_id,
        "CANDLEFLOW_FLINK_REST_PORT": str(s.flink_rest_port),
        "CANDLEFLOW_REDIS_PORT": str(s.redis_port),
        "COLUMNS": "200",
    }
    r = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "status", "--minutes", "60"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert s.topic_features in out and "0:10" in out
    assert s.writer_group_id in out and f"{s.topic_features}[0]=7" in out
    assert "feature_redis" in out and "candle" in out
    assert "flink jobs: not running" in out
    r = subprocess.run(
        [sys.executable, "-m", "jobs.cli", "status", "--json"],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert json.loads(r.stdout)["freshness"]["stages"]["candle"]["last_window_end_ms"] == end
