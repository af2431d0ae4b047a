"""The feature writer records `feature_redis` freshness in ClickHouse (chDB) in its batch:
real Tansu, redis-server, Feast and chDB (the 18.16-server variants are in
test_feature_writer.py)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from infra.clickhouse import connect
from infra.kafka import ensure_topics
from infra.local import RedisServer, TansuBroker
from infra.settings import Settings
from jobs.writers.config import WriterConfig
from jobs.writers.features import FeatureWriter
from udfs.indicators import FEATURE_NAMES

pytestmark = pytest.mark.integration


def _message(symbol: str, end_ms: int) -> dict[str, object]:
    row: dict[str, object] = {
        "feature_key": f"{symbol}|1m",
        "symbol": symbol,
        "timeframe": "1m",
        "window_start_ms": end_ms - 60_000,
        "window_end_ms": end_ms,
        "open": 100.0,
        "high": 101.0,
        "low": 99.0,
        "close": 100.5,
        "volume": 3.0,
        "vwap": 100.2,
        "trade_count": 7,
        "features_ready": False,
        "event_time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime((end_ms - 1) // 1000))
        + ".999Z",
        "computed_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
    }
    for i, f in enumerate(FEATURE_NAMES):
        row[f] = None if i % 2 else 0.5 * i
    return row


def test_feature_writer_writes_freshness(
    broker: TansuBroker, redis_server: RedisServer, tmp_path: Path
) -> None:
    from confluent_kafka import Producer

    tag = uuid.uuid4().hex[:8]
    s = Settings(
        kafka_bootstrap=broker.bootstrap,
        state_dir=tmp_path,
        redis_port=redis_server.port,
        topic_features=f"features_{tag}",
        topic_features_dlq=f"features_dlq_{tag}",
        feast_project=f"fresh_{tag}",
        clickhouse_url=f"chdb://{tmp_path / 'chdb'}",
        watermark_delay_ms=2_000,
        metrics_port=0,
    )
    ensure_topics(s.kafka_bootstrap, [s.topic_features, s.topic_features_dlq])
    now = int(time.time() * 1000)
    last_end = now - now % 60_000
    ends = [last_end - 60_000 * k for k in (2, 1, 0)]
    p = Producer({"bootstrap.servers": s.kafka_bootstrap})
    for end in ends:
        for sym in ("AAAUSDT", "BBBUSDT"):
            p.produce(s.topic_features, json.dumps(_message(sym, end)).encode())
    p.produce(s.topic_features, b"not json")
    p.flush()
    lbl = {"writer": "feature writer", "topic": s.topic_features}
    rows_before = REGISTRY.get_sample_value("candleflow_writer_rows_total", lbl) or 0.0

    t0 = int(time.time() * 1000)
    w = FeatureWriter(s, WriterConfig(group_id=f"fw_{tag}", until_idle_s=2, max_wait_ms=200))
    with w:
        w.run()
    t1 = int(time.time() * 1000)
    assert w.stats.rows == 6 and w.stats.dead_lettered == 1

    with connect(s) as store:
        got = store.query(
            "SELECT stage, symbol, timeframe, window_end_ms, observed_at_ms, lag_ms, "
            "watermark_delay_ms, observed_by FROM pipeline_freshness "
            "ORDER BY symbol, window_end_ms"
        )
    assert [(r["symbol"], r["window_end_ms"]) for r in got] == [
        (sym, e) for sym in ("AAAUSDT", "BBBUSDT") for e in ends
    ]
    for r in got:
        assert r["stage"] == "feature_redis" and r["timeframe"] == "1m"
        assert r["observed_by"] == "feature_writer" and r["watermark_delay_ms"] == 2_000
        assert t0 <= r["observed_at_ms"] <= t1
        assert r["lag_ms"] == r["observed_at_ms"] - r["window_end_ms"] - 2_000
    assert REGISTRY.get_sample_value("candleflow_writer_rows_total", lbl) == rows_before + 6
    g = {"stage": "feature_redis", "symbol": "BBBUSDT", "timeframe": "1m"}
    assert REGISTRY.get_sample_value("candleflow_stage_last_window_end_seconds", g) == (
        last_end / 1000
    )
