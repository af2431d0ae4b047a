"""The writers' adversarial corpus (tests/data/writer_corpus/) through the real writers on
real services: a Tansu broker, ClickHouse 18.16 (server) or chDB, redis-server + Feast.

Per writer: real good rows, then every corpus line in file order (poison and valid mixed),
then real good rows again, onto the writer's topic(s); then ``candleflow <x> write
--until-idle`` (the command itself, in a subprocess) until the topics are drained. It must
exit 0; every good and every ``ok`` row must be in the stores with its values (ClickHouse
``FINAL``; for features also the offline parquet and Redis); every ``dlq`` line must be in
the dead-letter topic with its exact reason and source offset; the committed offsets must
be at the topics' ends.

The second line of defence (a store that rejects data the parse step let through) is
exercised with rules the writer cannot know: a CHECK constraint added to the chDB table,
a backfill whose one batch spans more than chDB's 100 partitions per INSERT, and a column
narrowed on the 18.16 server (``UInt16`` instead of ``Int64``).
"""

from __future__ import annotations

import base64
import json
import math
import os
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

from infra.clickhouse import ClickHouseStore, connect
from infra.kafka import ensure_topics, read_all
from infra.local import ClickHouseServer, RedisServer, TansuBroker
from infra.settings import REPO_ROOT, SHARED_DATA, Settings
from jobs.writers.dlq import DLQ_PAYLOAD_MAX_BYTES
from tests.writer_corpus import Case, expected_row, load, same

pytestmark = pytest.mark.integration
CLI = str(Path(sys.executable).parent / "candleflow")
KEYS = {
    "candles": ("symbol", "timeframe", "window_start_ms"),
    "features": ("symbol", "timeframe", "window_start_ms"),
    "predictions": ("symbol", "timeframe", "bar_end_ms", "model_tag"),
    "orders": ("strategy", "client_order_id"),
    "fills": ("strategy", "client_order_id"),
    "equity": ("strategy", "bar_end_ms"),
}
TABLES = {
    "candles": "candles",
    "features": "features",
    "predictions": "trading_predictions",
    "orders": "trading_orders",
    "fills": "trading_fills",
    "equity": "trading_equity",
}


# ------------------------------------------------------------------------- good rows
def good_candles() -> list[dict[str, Any]]:
    """Real ETHUSDT.UM 1m candles (tests/reference.py over real trades)."""
    from tests.reference import candles_reference

    df = pd.read_parquet(SHARED_DATA / "binance_trades_sample.parquet")
    df = df[df.symbol == "ETHUSDT.UM"].head(4000)
    out = []
    for (sym, tf, ws), c in sorted(candles_reference(df.to_dict("records")).items()):
        if tf != "1m":
            continue
        out.append(
            {"symbol": sym, "timeframe": tf, "window_start_ms": ws,
             "window_end_ms": c["window_end_ms"],
             **{k: float(c[k]) for k in ("open", "high", "low", "close", "volume",
                                          "quote_volume", "vwap")},
             "trade_count": int(c["trade_count"]),
             "buy_volume": float(c["buy_volume"]), "sell_volume": float(c["sell_volume"]),
             "first_trade_id": c["first_trade_id"], "last_trade_id": c["last_trade_id"],
             "emitted_at": iso(c["window_end_ms"] + 1_500)}
        )  # fmt: skip
    assert len(out) >= 4
    return out


def good_features() -> list[dict[str, Any]]:
    """Real 2021 ETHUSDT klines -> feature rows (udfs.indicators), 120 bars."""
    from udfs.indicators import FEATURE_NAMES, INPUTS, compute_series

    df = pd.read_csv(SHARED_DATA / "binance_1m_top5_2021.csv.gz")
    df = df[df.symbol == "ETHUSDT"].sort_values("ts_ms").head(120).reset_index(drop=True)
    df["vwap"] = (df.high + df.low + df.close) / 3
    feats = compute_series({k: df[k].to_numpy(np.float64) for k in INPUTS})
    out = []
    for t in range(len(df)):
        r = df.iloc[t]
        row: dict[str, Any] = {
            "feature_key": "ETHUSDT|1m", "symbol": "ETHUSDT", "timeframe": "1m",
            "window_start_ms": int(r.ts_ms), "window_end_ms": int(r.ts_ms) + 60_000,
            **{k: float(r[k]) for k in INPUTS}, "trade_count": 1,
        }  # fmt: skip
        vals = {n: float(feats[n][t]) for n in FEATURE_NAMES}
        row |= {n: (None if math.isnan(v) else v) for n, v in vals.items()}
        row["features_ready"] = not any(math.isnan(v) for v in vals.values())
        row["event_time"] = iso(int(r.ts_ms) + 59_999)
        row["computed_at"] = iso(int(r.ts_ms) + 61_000)
        out.append(row)
    return out


def good_trading() -> dict[str, list[dict[str, Any]]]:
    """The strategy engine over real klines (strategy cf2), and a prediction per bar."""
    from udfs.strategy import StrategyConfig, run_batch

    df = pd.read_csv(SHARED_DATA / "binance_1m_top5_2021.csv.gz")
    df = df[df.symbol.isin(["SOLUSDT", "XRPUSDT"])].sort_values(["ts_ms", "symbol"])
    bars = df.groupby("symbol").head(200).reset_index(drop=True)
    bars = bars.assign(bar_end_ms=bars.ts_ms + 60_000)
    p = np.random.default_rng(5).dirichlet([2, 3, 2], size=len(bars))
    bars["p_down"], bars["p_flat"], bars["p_up"] = p[:, 0], p[:, 1], p[:, 2]
    cfg = StrategyConfig(strategy_id="cf2", position_fraction=0.5, max_hold_bars=3,
                         max_position_notional=1e9, max_gross_notional=1e9)  # fmt: skip
    orders, fills, equity = run_batch(bars, cfg)

    def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
        out = []
        for rec in frame.to_dict("records"):
            row = {str(k): (v.item() if isinstance(v, np.generic) else v) for k, v in rec.items()}
            row = {k: (None if isinstance(v, float) and math.isnan(v) else v)
                   for k, v in row.items()}  # fmt: skip
            out.append(row | {"strategy": "cf2", "timeframe": "1m"})
        return out

    preds = [
        {"symbol": b.symbol, "timeframe": "1m", "bar_end_ms": int(b.bar_end_ms),
         "model_tag": "good", "p_down": float(b.p_down), "p_flat": float(b.p_flat),
         "p_up": float(b.p_up), "signal": float(b.p_up - b.p_down), "status": "ok",
         "reason": None, "latency_ms": 2.5, "predicted_at_ms": int(b.bar_end_ms) + 40}
        for b in bars.itertuples()
    ]  # fmt: skip
    out = {"predictions": preds, "orders": records(orders), "fills": records(fills),
           "equity": records(equity)}  # fmt: skip
    # one row per key (the strategy emits a rejected order again with the same id)
    out["orders"] = list({o["client_order_id"]: o for o in out["orders"]}.values())
    assert all(out.values())
    return out


def iso(ms: int) -> str:
    return pd.Timestamp(ms, unit="ms", tz="UTC").strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# ------------------------------------------------------------------------------ plumbing
def produce(bootstrap: str, topic: str, raws: list[bytes | None]) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                  "message.max.bytes": 2_000_000})  # fmt: skip
    for r in raws:
        p.produce(topic, r)
        p.poll(0)
    assert p.flush(60) == 0


def committed(bootstrap: str, group: str, topic: str) -> int | None:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        off = c.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
        return None if off < 0 else int(off)
    finally:
        c.close()


def run_cli(
    env: dict[str, str], log: Path, *args: str, batch: int = 64, timeout: float = 300
) -> str:
    full = dict(os.environ) | env | {"PYTHONUNBUFFERED": "1", "CANDLEFLOW_METRICS_PORT": "0",
                                     "COLUMNS": "400"}  # fmt: skip
    t0 = time.monotonic()
    with open(log, "ab") as out:
        res = subprocess.run([CLI, *args, "--until-idle", "4", "--max-batch", str(batch),
                              "--max-wait-ms", "300", "--log-every", "2"], env=full,
                             cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                             timeout=timeout)  # fmt: skip
    text = log.read_text()
    print(f"\n{' '.join(args)}: exit {res.returncode} in {time.monotonic() - t0:.1f} s")
    assert res.returncode == 0, text[-4000:]
    assert "Traceback" not in text, text[-4000:]
    return text


def env_of(s: Settings, *names: str) -> dict[str, str]:
    return {f"CANDLEFLOW_{n.upper()}": str(getattr(s, n)) for n in names}


def check_dlq(bootstrap: str, dlq_topic: str, source_topic: str,
              expected: dict[int, tuple[str, bytes | None]], detected_by: str) -> None:  # fmt: skip
    """The DLQ holds exactly ``expected`` (source offset -> (reason, raw message))."""
    recs = read_all(bootstrap, dlq_topic, expected=len(expected), idle_timeout_s=5)
    got = {r["source_offset"]: r for r in recs}
    assert len(recs) == len(got) == len(expected), (len(recs), len(expected))
    wrong = {o: (got[o]["reason"], why) for o, (why, _) in expected.items()
             if got[o]["reason"] != why}  # fmt: skip
    assert not wrong
    for off, (_, raw) in expected.items():
        r = got[off]
        assert (r["source_topic"], r["source_partition"], r["detected_by"]) == (
            source_topic, 0, detected_by)  # fmt: skip
        data = raw or b""
        cut = data[:DLQ_PAYLOAD_MAX_BYTES]
        assert r["payload"] == cut.decode("utf-8", errors="replace")
        if "payload_base64" in r:
            assert base64.b64decode(r["payload_base64"]) == cut
        assert r.get("payload_truncated", False) == (len(data) > DLQ_PAYLOAD_MAX_BYTES)


def check_table(store: ClickHouseStore, topic: str, want: list[dict[str, Any]]) -> None:
    """``FINAL`` of the topic's table == ``want`` (rows keyed by the table's key)."""
    key = KEYS[topic]
    rows = store.query(f"SELECT * FROM {TABLES[topic]} FINAL")
    got = {tuple(r[k] for k in key): r for r in rows}
    exp = {tuple(r[k] for k in key): r for r in want}
    assert len(exp) == len(want), "two expected rows share a key"
    assert len(got) == len(rows)
    assert sorted(map(repr, got)) == sorted(map(repr, exp))
    bad = {}
    for k, w in exp.items():
        diff = {c: (got[k][c], v) for c, v in w.items() if not same(got[k][c], v)}
        if diff:
            bad[k] = diff
    assert not bad, list(bad.items())[:3]


def corpus_plan(topic: str, before: list[bytes], after: list[bytes]) -> tuple[
    list[bytes | None], dict[int, tuple[str, bytes | None]], list[Case]
]:  # fmt: skip
    """Messages in order (good, corpus, good), the expected dead letters by offset, and the
    ``ok`` cases."""
    cases = load(topic)
    msgs: list[bytes | None] = [*before, *(c.raw for c in cases), *after]
    dlq = {len(before) + i: (c.reason or "", c.raw) for i, c in enumerate(cases)
           if c.expect == "dlq"}  # fmt: skip
    return msgs, dlq, [c for c in cases if c.expect == "ok"]


def columns_of(store: ClickHouseStore, topic: str) -> list[str]:
    return list(store.table_columns(TABLES[topic]))


def json_row(topic: str, msg: dict[str, Any], cols: list[str]) -> dict[str, Any]:
    raw = json.dumps(msg).encode()
    case = Case(topic, 0, "good", raw, "ok", None, {})
    return expected_row(topic, case, cols)


@pytest.fixture
def db(clickhouse_server: ClickHouseServer) -> Iterator[str]:
    url = clickhouse_server.url_for(f"wc_{uuid.uuid4().hex[:8]}")
    yield url
    with connect(url) as st:
        st.execute(f"DROP DATABASE IF EXISTS {st.database}")


# --------------------------------------------------------------------------------- tests
def test_candles_corpus(broker: TansuBroker, state_dir: Path, db: str, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    s = Settings(kafka_bootstrap=broker.bootstrap, state_dir=state_dir, clickhouse_url=db,
                 topic_candles=f"candles_{tag}", topic_candles_dlq=f"candles_dlq_{tag}",
                 candles_group_id=f"cw_{tag}")  # fmt: skip
    ensure_topics(s.kafka_bootstrap, [s.topic_candles, s.topic_candles_dlq])
    good = good_candles()
    half = len(good) // 2
    enc = [json.dumps(g).encode() for g in good]
    msgs, dlq, oks = corpus_plan("candles", enc[:half], enc[half:])
    produce(s.kafka_bootstrap, s.topic_candles, msgs)
    text = run_cli(env_of(s, "kafka_bootstrap", "state_dir", "clickhouse_url", "topic_candles",
                          "topic_candles_dlq", "candles_group_id"), tmp_path / "w.log",
                   "candles", "write")  # fmt: skip
    assert f"dead-lettered {len(dlq):,}" in text
    assert committed(s.kafka_bootstrap, s.candles_group_id, s.topic_candles) == len(msgs)
    check_dlq(s.kafka_bootstrap, s.topic_candles_dlq, s.topic_candles, dlq, "candles_writer")
    with connect(db) as store:
        cols = columns_of(store, "candles")
        want = [json_row("candles", g, cols) for g in good]
        want += [expected_row("candles", c, cols) for c in oks]
        check_table(store, "candles", want)
        n = store.query("SELECT count() AS n FROM pipeline_freshness")[0]["n"]
        assert n >= len(want)  # one freshness row per written candle (more if re-delivered)


def test_features_corpus(
    broker: TansuBroker, state_dir: Path, redis_server: RedisServer, db: str, tmp_path: Path
) -> None:
    from infra.feature_store import FeatureStoreClient, to_feature_frame
    from udfs.indicators import FEATURE_NAMES

    tag = uuid.uuid4().hex[:8]
    s = Settings(kafka_bootstrap=broker.bootstrap, state_dir=state_dir, clickhouse_url=db,
                 topic_features=f"features_{tag}", topic_features_dlq=f"features_dlq_{tag}",
                 writer_group_id=f"fw_{tag}", redis_host=redis_server.host,
                 redis_port=redis_server.port, feast_dir=tmp_path / "feast",
                 feast_project=f"wc{tag}")  # fmt: skip
    ensure_topics(s.kafka_bootstrap, [s.topic_features, s.topic_features_dlq])
    good = good_features()
    enc = [json.dumps(g).encode() for g in good]
    msgs, dlq, oks = corpus_plan("features", enc[:60], enc[60:])
    produce(s.kafka_bootstrap, s.topic_features, msgs)
    text = run_cli(env_of(s, "kafka_bootstrap", "state_dir", "clickhouse_url",
                          "topic_features", "topic_features_dlq", "writer_group_id",
                          "redis_host", "redis_port", "feast_dir", "feast_project"),
                   tmp_path / "w.log", "features", "write")  # fmt: skip
    assert f"dead-lettered {len(dlq):,}" in text
    assert committed(s.kafka_bootstrap, s.writer_group_id, s.topic_features) == len(msgs)
    check_dlq(s.kafka_bootstrap, s.topic_features_dlq, s.topic_features, dlq, "feature_writer")
    with connect(db) as store:
        cols = columns_of(store, "features")
        want = [json_row("features", g, cols) for g in good]
        want += [expected_row("features", c, cols) for c in oks]
        check_table(store, "features", want)

    # the offline store: the same rows (one per entity and event time); timestamps from
    # the expected epoch ms
    ok_msgs = []
    for r in want:
        r = dict(r)
        for f in ("event_time", "computed_at"):
            r[f] = pd.Timestamp(r[f], unit="ms", tz="UTC")
        ok_msgs.append(r)
    client = FeatureStoreClient(s)
    key = ["symbol", "timeframe", "event_time"]
    got = client.read_offline().sort_values(key).reset_index(drop=True)
    exp = to_feature_frame(ok_msgs).sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, exp)
    # Redis: per entity, the row with the newest event time
    latest = exp.sort_values("event_time").groupby(["symbol", "timeframe"]).tail(1)
    for tf, part in latest.groupby("timeframe"):
        online = client.online_features(list(part.symbol), str(tf)).set_index("symbol")
        for r in part.itertuples():
            o = online.loc[r.symbol]
            for f in ("close", "trade_count", *FEATURE_NAMES[:5]):
                a, b = o[f], getattr(r, f)
                assert (a is None and math.isnan(b)) or same(float(a), float(b)), (r.symbol, f)


def test_trading_corpus(broker: TansuBroker, state_dir: Path, db: str, tmp_path: Path) -> None:
    from jobs.writers.trading import dlq_topic

    tag = uuid.uuid4().hex[:8]
    s = Settings(kafka_bootstrap=broker.bootstrap, state_dir=state_dir, clickhouse_url=db,
                 topic_predictions=f"predictions_{tag}", topic_orders=f"orders_{tag}",
                 topic_fills=f"fills_{tag}", topic_equity=f"equity_{tag}",
                 trading_group_id=f"tw_{tag}")  # fmt: skip
    topics = {k: getattr(s, f"topic_{k}") for k in ("predictions", "orders", "fills", "equity")}
    ensure_topics(s.kafka_bootstrap, [*topics.values(), *map(dlq_topic, topics.values())])
    good = good_trading()
    plans = {}
    for kind, topic in topics.items():
        enc = [json.dumps(g).encode() for g in good[kind]]
        half = len(enc) // 2
        plans[kind] = corpus_plan(kind, enc[:half], enc[half:])
        produce(s.kafka_bootstrap, topic, plans[kind][0])
    text = run_cli(env_of(s, "kafka_bootstrap", "state_dir", "clickhouse_url",
                          "topic_predictions", "topic_orders", "topic_fills", "topic_equity",
                          "trading_group_id"), tmp_path / "w.log", "trading", "write")  # fmt: skip
    n_dlq = sum(len(p[1]) for p in plans.values())
    assert f"dead-lettered {n_dlq:,}" in text
    with connect(db) as store:
        for kind, topic in topics.items():
            msgs, dlq, oks = plans[kind]
            assert committed(s.kafka_bootstrap, s.trading_group_id, topic) == len(msgs)
            check_dlq(s.kafka_bootstrap, dlq_topic(topic), topic, dlq, "trading_writer")
            cols = columns_of(store, kind)
            want = [json_row(kind, g, cols) for g in good[kind]]
            want += [expected_row(kind, c, cols) for c in oks]
            check_table(store, kind, want)


# ----------------------------------------------------------- the second line of defence
@pytest.mark.parametrize("backend", ["chdb", "server"])
def test_candles_a_store_rule_the_writer_cannot_know(
    backend: str, broker: TansuBroker, state_dir: Path, request: pytest.FixtureRequest,
    tmp_path: Path,
) -> None:  # fmt: skip
    """Messages that pass the parse step but that this particular table rejects:
    chDB: a CHECK constraint (close > 0) added by an operator, and a backfill of 250
    monthly candles (one batch > chDB's 100 partitions per INSERT: each row is fine);
    server 18.16: trade_count narrowed to UInt16 (a candle with 70,000 trades). The
    writer bisects, dead-letters what the store rejects with its error, writes the rest,
    commits and goes on."""
    tag = uuid.uuid4().hex[:8]
    if backend == "chdb":
        url = f"chdb://{tmp_path / 'chdb'}"
    else:
        url = request.getfixturevalue("clickhouse_server").url_for(f"wc2_{tag}")
    s = Settings(kafka_bootstrap=broker.bootstrap, state_dir=state_dir, clickhouse_url=url,
                 topic_candles=f"candles_{tag}", topic_candles_dlq=f"candles_dlq_{tag}",
                 candles_group_id=f"cw_{tag}")  # fmt: skip
    ensure_topics(s.kafka_bootstrap, [s.topic_candles, s.topic_candles_dlq])
    with connect(url) as store:  # the operator's change, after the migrations
        store.migrate()
        if backend == "chdb":
            store.execute("ALTER TABLE candles ADD CONSTRAINT close_positive CHECK close > 0")
        else:
            store.execute("ALTER TABLE candles MODIFY COLUMN trade_count UInt16")
    good = good_candles()
    base = good[0]
    poison: list[dict[str, Any]] = []
    if backend == "chdb":
        poison.append(base | {"window_start_ms": base["window_start_ms"] + 3_600_000,
                              "window_end_ms": base["window_end_ms"] + 3_600_000,
                              "close": -1.0})  # fmt: skip
        month = 31 * 86_400_000
        backfill = [base | {"symbol": "BACKFILL", "window_start_ms": 631_152_000_000 + i * month,
                            "window_end_ms": 631_152_000_000 + i * month + 60_000,
                            "emitted_at": iso(631_152_000_000 + i * month + 61_000)}
                    for i in range(250)]  # fmt: skip
    else:
        poison.append(base | {"window_start_ms": base["window_start_ms"] + 3_600_000,
                              "window_end_ms": base["window_end_ms"] + 3_600_000,
                              "trade_count": 70_000})  # fmt: skip
        backfill = []
    half = len(good) // 2
    msgs = [*good[:half], poison[0], *backfill, *good[half:]]
    produce(s.kafka_bootstrap, s.topic_candles, [json.dumps(m).encode() for m in msgs])
    text = run_cli(env_of(s, "kafka_bootstrap", "state_dir", "clickhouse_url", "topic_candles",
                          "topic_candles_dlq", "candles_group_id"), tmp_path / "w.log",
                   "candles", "write", batch=1_000)  # fmt: skip
    assert "isolating the message(s) it rejects" in text
    if backend == "chdb":  # the backfill's block was too big, its halves were not
        assert "Too many partitions for single INSERT block" in text
    assert committed(s.kafka_bootstrap, s.candles_group_id, s.topic_candles) == len(msgs)
    (rec,) = read_all(s.kafka_bootstrap, s.topic_candles_dlq, expected=1, idle_timeout_s=5)
    print(f"{backend}: {rec['reason']}")
    assert rec["source_offset"] == half
    assert json.loads(rec["payload"]) == poison[0]
    if backend == "chdb":
        assert rec["reason"].startswith("ClickHouse rejected the message: ChdbError: Code: 469.")
        assert "close_positive" in rec["reason"]
    else:
        assert rec["reason"] == (
            "ClickHouse rejected the message: TypeMismatchError: Code: 53. Type mismatch in "
            "VALUES section. Repeat query with types_check=True for detailed info. Column "
            "trade_count: ushort format requires 0 <= number <= 65535"
        )
    with connect(url) as store:
        cols = columns_of(store, "candles")
        check_table(store, "candles", [json_row("candles", m, cols) for m in msgs
                                       if m is not poison[0]])  # fmt: skip
        if backend == "server":
            store.execute(f"DROP DATABASE IF EXISTS {store.database}")
