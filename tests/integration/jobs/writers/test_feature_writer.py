"""Feature writer on real services: Tansu broker, redis-server, ClickHouse 18.16 server, and
the real Flink features job producing the `features` topic from real 2021 Binance 1m candles
(all 5 symbols). One Flink run (module fixture) feeds every test; each test has its own
consumer group, Feast project/folder and ClickHouse database.

Oracles: the topic's own messages. ClickHouse ``FINAL`` must equal them exactly (floats by
bit pattern), Redis must hold each symbol's last row, the offline store must dedupe to them.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from infra.clickhouse import ClickHouseStore, connect, features_row
from infra.connectors import Endpoints
from infra.feature_store import PRICE_COLUMNS, FeatureStoreClient, to_feature_frame
from infra.kafka import OffsetTracker, ensure_topics, make_producer, read_all, send_tracked
from infra.local import ClickHouseServer, RedisServer, free_port
from infra.settings import REPO_ROOT, Settings, settings_env
from jobs.flink import features
from jobs.writers.features import PAUSE_ENV, FeatureWriter, WriterConfig
from tests.conftest import CANDLES_CSV, make_settings
from udfs.indicators import FEATURE_NAMES

pytestmark = pytest.mark.integration
BARS = 120  # 1m bars per symbol through Flink: 600 feature rows, the last 21 per symbol warm
SYMBOLS = ["BNBUSDT", "BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"]
ONLINE_COLUMNS = [*PRICE_COLUMNS, "trade_count", *FEATURE_NAMES]
CLI = str(Path(sys.executable).parent / "candleflow")


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def features_topic(broker, state_dir) -> tuple[Settings, list[bytes]]:
    """Real candles -> the Flink features job -> `features`; returns its raw messages."""
    s = make_settings(broker, state_dir)
    s = s.model_copy(update={"topic_features": s.topic_candles.replace("candles", "features")})
    ensure_topics(s.kafka_bootstrap, [s.topic_features])
    df = pd.read_csv(CANDLES_CSV)
    df = df.sort_values(["ts_ms", "symbol"]).groupby("symbol").head(BARS)
    df["vwap"] = (df.high + df.low + df.close) / 3  # the 2021 file has no VWAP; a proxy
    assert sorted(df.symbol.unique()) == SYMBOLS
    producer = make_producer(s.kafka_bootstrap)
    tracker = OffsetTracker(s.topic_candles)
    for r in df.itertuples(index=False):
        send_tracked(producer, tracker, features.kline_message(r), key=f"{r.symbol}|1m")
    producer.flush()
    features.submit(Endpoints(s, end_offsets=tracker.end)).wait()
    raw = read_all(
        s.kafka_bootstrap, s.topic_features, expected=len(df), idle_timeout_s=5, deserialize=None
    )
    assert len(raw) == len(df) == BARS * 5
    return s, raw


def writer_settings(
    base: Settings, tmp_path: Path, redis: RedisServer, ch: ClickHouseServer, **kw: Any
) -> Settings:
    tag = uuid.uuid4().hex[:8]
    values: dict[str, Any] = {
        "feast_dir": tmp_path / "feast",
        "feast_project": f"w{tag}",
        "redis_host": redis.host,
        "redis_port": redis.port,
        "clickhouse_url": ch.url_for(f"w_{tag}"),
        "topic_features_dlq": f"features_dlq_{tag}",
        "writer_group_id": f"writer_{tag}",
    }
    values.update(kw)
    return base.model_copy(update=values)


@pytest.fixture
def ch_store(clickhouse_server: ClickHouseServer) -> Iterator[list[ClickHouseStore]]:
    """Stores opened by a test (dropped at the end)."""
    opened: list[ClickHouseStore] = []
    yield opened
    for st in opened:
        st.execute(f"DROP DATABASE IF EXISTS {st.database}")
        st.close()


# ------------------------------------------------------------------------------ oracles
def bits(v: Any) -> Any:
    if isinstance(v, float):
        return ("f", struct.pack("<d", v))
    if isinstance(v, bool):
        return int(v)
    return v


def expected_table(raw: list[bytes]) -> list[dict[str, Any]]:
    rows = [features_row(json.loads(m)) for m in raw]
    rows.sort(key=lambda r: (r["symbol"], r["timeframe"], r["window_start_ms"]))
    return [{k: bits(v) for k, v in r.items()} for r in rows]


def table_final(store: ClickHouseStore) -> list[dict[str, Any]]:
    rows = store.query("SELECT * FROM features FINAL ORDER BY symbol, timeframe, window_start_ms")
    return [{k: bits(v) for k, v in r.items()} for r in rows]


def count_raw(store: ClickHouseStore) -> int:
    return int(store.query("SELECT count() AS n FROM features")[0]["n"])


def deliveries(store: ClickHouseStore) -> int:
    """Rows ever inserted into `features` (the freshness view counts every insert; merges
    of the ReplacingMergeTree may already have dropped duplicates from count())."""
    rows = store.query("SELECT countMerge(rows_written) AS n FROM feature_freshness")
    return int(rows[0]["n"])


def last_rows(raw: list[bytes]) -> pd.DataFrame:
    df = to_feature_frame([json.loads(m) for m in raw])
    df = df.sort_values(["symbol", "window_start_ms"]).groupby("symbol").tail(1)
    return df.set_index("symbol").sort_index()


def assert_online_equals_last(client: FeatureStoreClient, raw: list[bytes]) -> pd.DataFrame:
    online = client.online_features(SYMBOLS, "1m").set_index("symbol").sort_index()
    want = last_rows(raw)
    assert list(online.index) == SYMBOLS == list(want.index)
    np.testing.assert_array_equal(
        online[ONLINE_COLUMNS].astype(float).to_numpy(), want[ONLINE_COLUMNS].to_numpy(float)
    )
    assert online["features_ready"].tolist() == want["features_ready"].tolist()
    return online


def assert_offline_equals(client: FeatureStoreClient, raw: list[bytes]) -> None:
    got = client.read_offline().sort_values(["symbol", "window_start_ms"]).reset_index(drop=True)
    want = to_feature_frame([json.loads(m) for m in raw])
    want = want.sort_values(["symbol", "window_start_ms"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want)


def committed(s: Settings, group: str) -> int | None:
    c = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": group})
    try:
        off = c.committed([TopicPartition(s.topic_features, 0)], timeout=10)[0].offset
        return None if off < 0 else int(off)
    finally:
        c.close()


def wait_for(pred: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def produce(s: Settings, topic: str, messages: list[bytes]) -> None:
    p = Producer({"bootstrap.servers": s.kafka_bootstrap, "linger.ms": 5})
    for m in messages:
        p.produce(topic, m)
    assert p.flush(30) == 0


def start_writer(s: Settings, log_file: Path, *args: str, **env: str) -> subprocess.Popen[bytes]:
    with open(log_file, "ab") as out:
        return subprocess.Popen(
            [CLI, "features", "write", "--log-every", "1", *args],
            env=os.environ | settings_env(s) | env,
            cwd=REPO_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


# --------------------------------------------------------------------------------- tests
def test_writer_flink_features_to_stores_and_replay(
    features_topic, redis_server, clickhouse_server, ch_store, tmp_path
) -> None:
    base, raw = features_topic
    s = writer_settings(base, tmp_path, redis_server, clickhouse_server)
    client = FeatureStoreClient(s)
    cfg = WriterConfig.from_settings(s, max_batch=128, max_wait_ms=300, until_idle_s=3)
    writer = FeatureWriter(s, cfg, client=client)
    with writer:
        st = writer.run()
    assert (st.rows, st.dead_lettered) == (len(raw), 0)
    assert st.batches >= len(raw) // 128
    assert committed(s, cfg.group_id) == len(raw)

    store = connect(s.clickhouse_url)
    ch_store.append(store)
    want = expected_table(raw)
    assert table_final(store) == want  # exactly the topic, one row per bar
    online = assert_online_equals_last(client, raw)
    assert_offline_equals(client, raw)
    ent = last_rows(raw).reset_index()[["symbol", "timeframe", "event_time"]]
    ent = ent.rename(columns={"event_time": "event_timestamp"})
    hist = client.historical_features(ent).sort_values("symbol").reset_index(drop=True)
    files = len(client.offline_files())

    # replay the same offsets with a new group: every row is written a second time
    cfg2 = WriterConfig.from_settings(s, group_id=cfg.group_id + "-replay", until_idle_s=3)
    with FeatureWriter(s, cfg2, client=client) as w2:
        assert w2.run().rows == len(raw)
    assert deliveries(store) == 2 * len(raw)  # every row was written twice ...
    assert table_final(store) == want  # ... and FINAL collapses them
    pd.testing.assert_frame_equal(
        client.online_features(SYMBOLS, "1m").set_index("symbol").sort_index(), online
    )
    assert len(client.offline_files()) > files
    assert_offline_equals(client, raw)
    hist2 = client.historical_features(ent).sort_values("symbol").reset_index(drop=True)
    pd.testing.assert_frame_equal(hist2, hist)

    # and resetting the original group to the start does the same
    c = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": cfg.group_id})
    c.commit(offsets=[TopicPartition(s.topic_features, 0, 0)], asynchronous=False)
    c.close()
    with FeatureWriter(s, cfg, client=client) as w3:
        assert w3.run().rows == len(raw)
    assert deliveries(store) == 3 * len(raw)
    assert table_final(store) == want
    assert_offline_equals(client, raw)
    assert_online_equals_last(client, raw)


def test_writer_sigkill_mid_batch_loses_and_duplicates_nothing(
    features_topic, redis_server, clickhouse_server, ch_store, tmp_path
) -> None:
    base, raw = features_topic
    s = writer_settings(base, tmp_path, redis_server, clickhouse_server)
    log_file = tmp_path / "writer.log"
    batch = 200
    # the first run pauses between the ClickHouse insert and the commit: killed there
    proc = start_writer(s, log_file, "--max-batch", str(batch), **{PAUSE_ENV: "120"})
    try:
        probe: list[ClickHouseStore] = []

        def first_batch_in_clickhouse() -> bool:
            if proc.poll() is not None:
                raise AssertionError(log_file.read_text()[-3000:])
            if not probe:
                try:
                    probe.append(connect(s.clickhouse_url))
                    ch_store.append(probe[0])
                except Exception:
                    return False
            try:
                in_table = count_raw(probe[0]) >= batch
            except Exception:  # table not migrated yet
                return False
            # the freshness rows are written after `features`: wait for the pause itself
            return in_table and "pausing" in log_file.read_text()

        wait_for(first_batch_in_clickhouse, 120, "the first batch in ClickHouse + the pause")
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    store = probe[0]
    assert deliveries(store) == batch  # written to all stores, then killed before the commit
    assert committed(s, s.writer_group_id) is None

    proc = start_writer(s, log_file, "--max-batch", str(batch), "--until-idle", "4")
    assert proc.wait(180) == 0, log_file.read_text()[-3000:]
    assert committed(s, s.writer_group_id) == len(raw)
    assert deliveries(store) == len(raw) + batch  # the killed batch was re-delivered ...
    assert table_final(store) == expected_table(raw)  # ... and nothing is duplicated or lost
    client = FeatureStoreClient(s)
    assert_offline_equals(client, raw)
    assert_online_equals_last(client, raw)


def test_writer_retries_while_redis_is_down_then_catches_up(
    features_topic, clickhouse_server, ch_store, tmp_path
) -> None:
    base, raw = features_topic
    redis = RedisServer(port=free_port(), state_dir=tmp_path / "redis-state", persistent=True)
    redis.start()
    try:
        tag = uuid.uuid4().hex[:8]
        s = writer_settings(base, tmp_path, redis, clickhouse_server)
        s = s.model_copy(update={"topic_features": f"features_{tag}"})
        ensure_topics(s.kafka_bootstrap, [s.topic_features, s.topic_features_dlq])
        # the topic's rows in time order, in three parts; malformed messages in the middle
        ordered = sorted(raw, key=lambda m: json.loads(m)["window_start_ms"])
        parts = [ordered[:200], ordered[200:400], ordered[400:]]
        bad_row = json.loads(ordered[0]) | {"close": "oops"}
        garbage = [b"{not json", json.dumps({"symbol": "BTCUSDT"}).encode()]
        garbage.append(json.dumps(bad_row).encode())
        log_file = tmp_path / "writer.log"
        proc = start_writer(
            s, log_file, "--max-batch", "50", "--max-wait-ms", "200", "--until-idle", "5"
        )
        store = connect(s.clickhouse_url)
        ch_store.append(store)

        def rows_in_clickhouse(n: int) -> Any:
            def check() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(log_file.read_text()[-3000:])
                try:
                    return count_raw(store) >= n
                except Exception:
                    return False

            return check

        produce(s, s.topic_features, parts[0])
        wait_for(rows_in_clickhouse(len(parts[0])), 120, "part 1 in ClickHouse")
        wait_for(lambda: committed(s, s.writer_group_id) == len(parts[0]), 30, "commit 1")
        redis.stop()  # SIGTERM: the append-only file is flushed
        t_down = time.monotonic()
        produce(s, s.topic_features, parts[1][:100] + garbage + parts[1][100:])
        time.sleep(10)
        # nothing past the unwritten rows: ClickHouse (after Redis) and the commit stand still
        assert count_raw(store) == len(parts[0])
        assert committed(s, s.writer_group_id) == len(parts[0])
        log_text = log_file.read_text()
        assert "online store (Redis): write failed" in log_text
        assert "still failing" in log_text
        redis = RedisServer(port=redis.port, state_dir=tmp_path / "redis-state", persistent=True)
        redis.start()
        assert time.monotonic() - t_down >= 10
        produce(s, s.topic_features, parts[2])
        assert proc.wait(180) == 0, log_file.read_text()[-3000:]
        log_text = log_file.read_text()
        assert "online store (Redis) recovered" in log_text

        total = len(raw) + len(garbage)
        assert committed(s, s.writer_group_id) == total
        assert table_final(store) == expected_table(raw)
        assert deliveries(store) == len(raw)  # Redis failed before ClickHouse was written
        client = FeatureStoreClient(s)
        assert_offline_equals(client, raw)
        assert_online_equals_last(client, raw)
        dlq = read_all(s.kafka_bootstrap, s.topic_features_dlq, expected=3, idle_timeout_s=3)
        assert sorted(d["reason"] for d in dlq) == sorted(
            ["not JSON: Expecting property name enclosed in double quotes: line 1 column 2 "
             "(char 1)", "missing fields: feature_key, timeframe, window_start_ms, "
             "window_end_ms, open", "close: expected a finite number"]
        )  # fmt: skip
        assert {d["source_offset"] for d in dlq} == {300, 301, 302}
        assert {d["source_topic"] for d in dlq} == {s.topic_features}
    finally:
        redis.stop()
