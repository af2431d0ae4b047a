"""A broker that lost data does not make a writer silently start over. The local broker
(Tansu, memory storage) drops every topic and committed offset when it restarts: the candles
writer, run again after such a restart, stops with a clear error instead of re-reading the
new log from offset 0 as if nothing had happened."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

from infra.clickhouse import connect
from infra.kafka import ensure_topics
from infra.local import TansuBroker, free_port
from infra.settings import REPO_ROOT, Settings
from tests.integration.test_writer_poison import CLI, committed, env_of, good_candles, produce

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
