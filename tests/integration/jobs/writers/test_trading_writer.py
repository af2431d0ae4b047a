"""Trading writer on real services: a Tansu broker, ClickHouse 18.16 server and chDB.

The messages are what the strategy job writes: ``udfs.strategy.run_batch`` (the engine the
Flink job wraps) over real 2021 Binance 1m candles (3 symbols x 1,500 bars, two UTC days)
with seeded synthetic probabilities (20 % of the rows without a prediction), sized so that
the paper broker rejects orders (insufficient cash), plus one prediction message per bar
(ok / degraded / refused). They are encoded like the Flink JSON sinks (NaN -> null, keys
symbol|timeframe, client_order_id, strategy).

Oracles: the messages themselves. ClickHouse ``FINAL`` must equal them exactly (floats by
bit pattern; a rejected order's row is the rejection), replays change nothing,
``pnl_daily`` equals a pandas computation from the equity messages, malformed messages are
in ``<topic>_dlq`` with their reasons. Nothing is mocked.
"""

from __future__ import annotations

import json
import math
import os
import signal
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from infra.clickhouse import TRADING_TABLES, ClickHouseStore, connect, trading_summary
from infra.kafka import ensure_topics, read_all
from infra.local import ClickHouseServer
from infra.settings import REPO_ROOT, Settings
from jobs.writers.base import PAUSE_ENV
from jobs.writers.trading import (
    FIELDS,
    KINDS,
    TradingWriter,
    dlq_topic,
    trading_config,
    trading_row,
)
from tests.conftest import CANDLES_CSV
from udfs.strategy import StrategyConfig, run_batch

pytestmark = pytest.mark.integration
SYMBOLS = ["BNBUSDT", "BTCUSDT", "ETHUSDT"]
BARS = 1_500  # per symbol: 2021-04-02 00:01 .. 2021-04-03 01:00 UTC
STRATEGY = "cf1"
TF = "1m"
MODEL = "candleflow_xgb:synthetic"
CLI = str(Path(sys.executable).parent / "candleflow")
# every entry sized to the whole account: buys of one bar compete for the cash and the
# later ones are rejected (insufficient_cash); the kill-switch fires too
CONFIG = StrategyConfig(
    strategy_id=STRATEGY,
    position_fraction=1.0,
    max_position_notional=1e9,
    max_gross_notional=1e9,
    max_hold_bars=3,  # + degraded rows: max-hold exits with a null signal
    exit_threshold=-0.3,
)


# ------------------------------------------------------------------------ the messages
@dataclass
class Messages:
    """Per kind: (key, JSON value) as the strategy job's sinks write them."""

    items: dict[str, list[tuple[str, bytes]]]
    equity: pd.DataFrame  # the equity messages as a frame

    def values(self, kind: str) -> list[dict[str, Any]]:
        return [json.loads(v) for _, v in self.items[kind]]

    def count(self) -> int:
        return sum(len(v) for v in self.items.values())


def _none_if_nan(v: Any) -> Any:
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, np.generic):
        return v.item()
    return v


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for rec in df.to_dict("records"):
        row = {str(k): _none_if_nan(v) for k, v in rec.items()}
        out.append(row | {"strategy": STRATEGY, "timeframe": TF})
    return out


@pytest.fixture(scope="module")
def messages() -> Messages:
    df = pd.read_csv(CANDLES_CSV, nrows=200_000)
    df = df[df.symbol.isin(SYMBOLS)].sort_values(["ts_ms", "symbol"]).groupby("symbol").head(BARS)
    assert sorted(df.symbol.unique()) == SYMBOLS and len(df) == BARS * len(SYMBOLS)
    bars = df.assign(bar_end_ms=df.ts_ms + 60_000).reset_index(drop=True)
    rng = np.random.default_rng(7)
    p = rng.dirichlet([2, 3, 2], size=len(bars))
    no_pred = rng.random(len(bars)) < 0.2
    bars["p_down"] = np.where(no_pred, np.nan, p[:, 0])
    bars["p_flat"] = np.where(no_pred, np.nan, p[:, 1])
    bars["p_up"] = np.where(no_pred, np.nan, p[:, 2])
    orders, fills, equity = run_batch(bars, CONFIG)

    preds = []
    for i, r in enumerate(_records(bars)):
        ok = not no_pred[i]
        status = "ok" if ok else ("degraded" if i % 2 else "refused")
        preds.append(
            {
                "prediction_key": f"{r['symbol']}|{TF}",
                "symbol": r["symbol"],
                "timeframe": TF,
                "bar_end_ms": int(r["bar_end_ms"]),
                "model_tag": None if status == "degraded" else MODEL,
                "p_down": float(r["p_down"]) if ok else None,
                "p_flat": float(r["p_flat"]) if ok else None,
                "p_up": float(r["p_up"]) if ok else None,
                "signal": float(r["p_up"]) - float(r["p_down"]) if ok else None,
                "status": status,
                "reason": None if ok else ("circuit_open: 3.2 s" if i % 2 else "not_ready"),
                "latency_ms": float(rng.gamma(2.0, 1.7)) if status != "degraded" else None,
                "predicted_at_ms": int(r["bar_end_ms"]) + 40 + i % 97,
            }
        )
    items = {
        "predictions": [(f"{m['symbol']}|{TF}", json.dumps(m).encode()) for m in preds],
        "orders": [(o["client_order_id"], json.dumps(o).encode()) for o in _records(orders)],
        "fills": [(f["client_order_id"], json.dumps(f).encode()) for f in _records(fills)],
        "equity": [(STRATEGY, json.dumps(e).encode()) for e in _records(equity)],
    }
    msgs = Messages(items, pd.DataFrame(_records(equity)))
    # what the test needs from the data: rejections, kill-switch, unfilled orders, 2 days
    st = pd.DataFrame(msgs.values("orders"))
    assert (st.status == "rejected").sum() >= 5 and (st.reason == "kill_switch").any()
    assert st.signal.isna().any()  # orders on degraded rows carry a null signal
    assert len(set(st.client_order_id) - {f["client_order_id"] for f in msgs.values("fills")})
    days = pd.to_datetime(msgs.equity.bar_end_ms - 1, unit="ms", utc=True).dt.date
    assert days.nunique() == 2
    return msgs


# garbage per topic: (value, the DLQ reason)
GARBAGE: dict[str, list[tuple[bytes, str]]] = {
    "predictions": [
        (
            b"{not json",
            "not JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        ),
        (
            json.dumps(
                {
                    "symbol": "BTCUSDT",
                    "timeframe": "1m",
                    "bar_end_ms": 1,
                    "model_tag": "m",
                    "p_down": 0.1,
                    "p_flat": 0.2,
                    "p_up": None,
                    "signal": None,
                    "status": "ok",
                    "reason": None,
                    "latency_ms": 1.0,
                    "predicted_at_ms": 2,
                }
            ).encode(),
            "status ok needs numbers in p_up, signal (got null or NaN)",
        ),
    ],
    "orders": [
        (b"", "empty message"),
        (
            json.dumps({"client_order_id": "x"}).encode(),
            "missing fields: strategy, timeframe, symbol, bar_end_ms, side",
        ),
    ],
    "fills": [(b"[1, 2, 3]", "not a JSON object")],
    "equity": [
        (
            json.dumps(
                {
                    "strategy": "cf1",
                    "timeframe": "1m",
                    "bar_end_ms": 1_617_321_660_000,
                    "cash": 1.0,
                    "equity": 1.0,
                    "gross": 0.0,
                    "realized_pnl": 0.0,
                    "fees_paid": 0.0,
                    "killed": 1,
                    "degraded": 0,
                }
            ).encode(),
            "killed: expected true/false",
        ),
    ],
}


# ------------------------------------------------------------------------------ oracles
def bits(v: Any) -> Any:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float):
        return ("f", struct.pack("<d", v))
    return v


def brows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: bits(v) for k, v in r.items()} for r in rows]


ORDER_BY = {
    "predictions": ("symbol", "timeframe", "bar_end_ms", "model_tag"),
    "orders": ("strategy", "client_order_id"),
    "fills": ("strategy", "client_order_id"),
    "equity": ("strategy", "bar_end_ms"),
}


def expected(msgs: Messages, kind: str) -> list[dict[str, Any]]:
    """The rows FINAL must show: one per key; an order's rejection replaces its new row."""
    rows = [trading_row(kind, m) for m in msgs.values(kind)]
    by_key: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        key = tuple(r[c] for c in ORDER_BY[kind])
        if kind == "orders" and key in by_key and by_key[key]["status"] == "rejected":
            continue
        by_key[key] = r
    return brows([by_key[k] for k in sorted(by_key)])


def final(store: ClickHouseStore, kind: str) -> list[dict[str, Any]]:
    table = TRADING_TABLES[kind]
    return brows(store.query(f"SELECT * FROM {table} FINAL ORDER BY {', '.join(ORDER_BY[kind])}"))


def assert_tables_equal_messages(store: ClickHouseStore, msgs: Messages) -> None:
    for kind in KINDS:
        got, want = final(store, kind), expected(msgs, kind)
        assert len(got) == len(want), kind
        assert got == want, kind


def pnl_daily_pandas(equity: pd.DataFrame) -> list[dict[str, Any]]:
    eq = equity.sort_values("bar_end_ms")
    day = pd.to_datetime(eq.bar_end_ms - 1, unit="ms", utc=True).dt.strftime("%Y-%m-%d")
    out = []
    for d, g in eq.groupby(day, sort=True):
        out.append(
            {
                "day": d,
                "open_equity": g.equity.iloc[0],
                "close_equity": g.equity.iloc[-1],
                "min_equity": g.equity.min(),
                "max_equity": g.equity.max(),
                "realized_pnl": g.realized_pnl.iloc[-1],
                "fees_paid": g.fees_paid.iloc[-1],
                "last_bar_end_ms": int(g.bar_end_ms.iloc[-1]),
            }
        )
    return out


def pnl_daily_clickhouse(store: ClickHouseStore) -> list[dict[str, Any]]:
    return store.query(
        "SELECT toString(day) AS day, argMinMerge(open_equity) AS open_equity, "
        "argMaxMerge(close_equity) AS close_equity, minMerge(min_equity) AS min_equity, "
        "maxMerge(max_equity) AS max_equity, argMaxMerge(close_realized_pnl) AS realized_pnl, "
        "argMaxMerge(close_fees) AS fees_paid, maxMerge(last_ts_ms) AS last_bar_end_ms "
        f"FROM pnl_daily WHERE strategy = '{STRATEGY}' GROUP BY day ORDER BY day"
    )


# ------------------------------------------------------------------------------ plumbing
def produce(s: Settings, msgs: Messages, garbage: bool = True) -> dict[str, int]:
    """All messages (garbage in the middle of each topic); returns the end offsets."""
    p = Producer({"bootstrap.servers": s.kafka_bootstrap, "linger.ms": 5})
    topics = trading_topics(s)
    ends = {}
    for kind in KINDS:
        items = msgs.items[kind]
        bad = [(f"bad-{i}", v) for i, (v, _) in enumerate(GARBAGE[kind])] if garbage else []
        half = len(items) // 2
        sequence = items[:half] + bad + items[half:]
        for key, value in sequence:
            p.produce(topics[kind], value, key=key.encode())
            p.poll(0)
        ends[topics[kind]] = len(sequence)
    assert p.flush(30) == 0
    return ends


def trading_topics(s: Settings) -> dict[str, str]:
    return {
        "predictions": s.topic_predictions,
        "orders": s.topic_orders,
        "fills": s.topic_fills,
        "equity": s.topic_equity,
    }


def committed(s: Settings, group: str) -> dict[str, int | None]:
    c = Consumer({"bootstrap.servers": s.kafka_bootstrap, "group.id": group})
    try:
        tps = [TopicPartition(t, 0) for t in trading_topics(s).values()]
        return {
            tp.topic: (None if tp.offset < 0 else tp.offset) for tp in c.committed(tps, timeout=10)
        }
    finally:
        c.close()


@pytest.fixture(scope="module")
def chdb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # chDB: one data path per process at a time; every store opened here is closed again
    return tmp_path_factory.mktemp("trading_chdb")


@pytest.fixture(params=["server", "chdb"])
def env(
    request: pytest.FixtureRequest, broker: Any, state_dir: Path, chdb_dir: Path
) -> Iterator[Settings]:
    tag = uuid.uuid4().hex[:8]
    db = f"tw_{tag}"
    if request.param == "server":
        server: ClickHouseServer = request.getfixturevalue("clickhouse_server")
        url = server.url_for(db)
    else:
        url = f"chdb://{chdb_dir}?database={db}"
    s = Settings(
        kafka_bootstrap=broker.bootstrap,
        state_dir=state_dir,
        clickhouse_url=url,
        topic_predictions=f"predictions_{tag}",
        topic_orders=f"orders_{tag}",
        topic_fills=f"fills_{tag}",
        topic_equity=f"equity_{tag}",
        trading_group_id=f"trading_{tag}",
    )
    topics = list(trading_topics(s).values())
    ensure_topics(s.kafka_bootstrap, topics + [dlq_topic(t) for t in topics])
    yield s
    with connect(url) as st:
        st.execute(f"DROP DATABASE IF EXISTS {st.database}")


def run_writer(s: Settings, **overrides: Any) -> TradingWriter:
    cfg = trading_config(s, max_batch=1_000, max_wait_ms=300, until_idle_s=2.0, **overrides)
    writer = TradingWriter(s, cfg)
    with writer:
        writer.run()
    return writer


# --------------------------------------------------------------------------------- tests
def test_topics_to_clickhouse_exactly_replays_change_nothing(
    env: Settings, messages: Messages
) -> None:
    s = env
    ends = produce(s, messages)
    w = run_writer(s)
    st = w.stats
    n_bad = sum(len(g) for g in GARBAGE.values())
    assert w.rows_by_kind() == {k: len(messages.items[k]) for k in KINDS}
    assert st.dead_lettered == n_bad and st.batches >= messages.count() // 1_000
    assert {t: st.committed[t][0] for t in ends} == ends
    assert committed(s, s.trading_group_id) == ends
    busy = st.last_commit_at - st.first_row_at
    print(f"\n{w.settings.clickhouse_url.split(':')[0]}: {st.rows:,} rows in {st.batches} "
          f"batches, {st.rows / busy:,.0f} rows/s (first message -> last commit)")  # fmt: skip

    with connect(s.clickhouse_url) as store:
        assert_tables_equal_messages(store, messages)
        # a rejected order is `rejected` under FINAL (its `new` row came first) and unfilled
        rejected = store.query(
            "SELECT client_order_id, reason FROM trading_orders FINAL WHERE status = 'rejected'"
        )
        sent = [o for o in messages.values("orders") if o["status"] == "rejected"]
        assert sorted(r["client_order_id"] for r in rejected) == sorted(
            o["client_order_id"] for o in sent
        )
        assert {r["reason"] for r in rejected} == {"insufficient_cash"}
        fills = {f["client_order_id"] for f in messages.values("fills")}
        assert not fills & {r["client_order_id"] for r in rejected}
        # pnl_daily (materialized view from trading_equity) == pandas over the messages
        daily = pnl_daily_pandas(messages.equity)
        assert pnl_daily_clickhouse(store) == daily
        # ... and its readable view (migration 007) says the same, plus the day's P&L
        view = store.query(
            "SELECT toString(day) AS day, open_equity, close_equity, min_equity, max_equity, "
            "realized_pnl, fees_paid, last_bar_end_ms, pnl FROM pnl_daily_view "
            f"WHERE strategy = '{STRATEGY}' ORDER BY day"
        )
        assert [{k: v for k, v in r.items() if k != "pnl"} for r in view] == daily
        assert [r["pnl"] for r in view] == [d["close_equity"] - d["open_equity"] for d in daily]

        # replay 1: the same group from the beginning; replay 2: a new group. Every row is
        # inserted again (the rejected orders' `new` rows arrive after their rejection)
        w1 = run_writer(s, from_beginning=True)
        w2 = run_writer(s, group_id=s.trading_group_id + "-replay")
        for again in (w1, w2):
            assert again.rows_by_kind() == w.rows_by_kind()
            assert again.stats.dead_lettered == n_bad
        assert committed(s, s.trading_group_id) == ends
        raw = store.query("SELECT count() AS n FROM trading_equity")[0]["n"]
        assert raw >= len(messages.items["equity"])  # stored until merges collapse them
        assert_tables_equal_messages(store, messages)
        assert pnl_daily_clickhouse(store) == daily
        store.execute("OPTIMIZE TABLE trading_orders FINAL")  # a merge keeps the rejection
        assert store.query("SELECT count() AS n FROM trading_orders")[0]["n"] == len(
            expected(messages, "orders")
        )
        assert_tables_equal_messages(store, messages)

        # the read helper for reports / Grafana
        summ = trading_summary(store, STRATEGY)
        eq = messages.equity[list(summ.equity.columns)].astype(summ.equity.dtypes.to_dict())
        pd.testing.assert_frame_equal(summ.equity, eq)
        assert len(summ.orders) == len(expected(messages, "orders"))
        assert len(summ.fills) == len(messages.items["fills"])
        states = summ.orders.state.value_counts().to_dict()
        assert states["rejected"] == len(sent) and states["filled"] == len(fills)
        assert states.get("pending", 0) >= 1  # orders after the last bar never fill
        assert summ.daily.drop(columns="pnl").to_dict("records") == daily
        closes = [d["close_equity"] for d in daily]
        assert summ.daily.pnl.tolist() == [
            closes[0] - daily[0]["open_equity"], closes[1] - closes[0]
        ]  # fmt: skip
        n_ok = sum(m["status"] == "ok" for m in messages.values("predictions"))
        got: dict[tuple[str, str], int] = {
            (str(r["model_tag"]), str(r["status"])): int(r["n"])
            for r in summ.predictions.to_dict("records")
        }
        assert got[(MODEL, "ok")] == n_ok and sum(got.values()) == len(
            messages.items["predictions"]
        )

    # the dead-letter topics: each malformed message 3 times (first run + 2 replays)
    for kind, topic in trading_topics(s).items():
        dlq = read_all(s.kafka_bootstrap, dlq_topic(topic), expected=3 * len(GARBAGE[kind]),
                       idle_timeout_s=3)  # fmt: skip
        assert sorted(d["reason"] for d in dlq) == sorted([r for _, r in GARBAGE[kind]] * 3)
        half = len(messages.items[kind]) // 2
        assert {d["source_offset"] for d in dlq} == set(range(half, half + len(GARBAGE[kind])))
        assert {(d["source_topic"], d["detected_by"]) for d in dlq} == {(topic, "trading_writer")}


@pytest.mark.parametrize("env", ["server"], indirect=True)  # the CLI is another process,
def test_cli_sigkill_before_commit_loses_and_duplicates_nothing(  # chDB is one per path
    env: Settings, messages: Messages, tmp_path: Path
) -> None:
    """`candleflow trading write` killed between its first insert and the commit: the
    restarted writer re-delivers that batch; the tables still equal the messages."""
    s = env
    ends = produce(s, messages, garbage=False)
    envvars = (
        dict(os.environ)
        | {
            "CANDLEFLOW_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
            "CANDLEFLOW_STATE_DIR": str(s.state_dir),
            "CANDLEFLOW_CLICKHOUSE_URL": s.clickhouse_url,
            "CANDLEFLOW_TRADING_GROUP_ID": s.trading_group_id,
            "PYTHONUNBUFFERED": "1",
        }
        | {f"CANDLEFLOW_TOPIC_{k.upper()}": t for k, t in trading_topics(s).items()}
    )
    log_file = tmp_path / "writer.log"
    args = [CLI, "trading", "write", "--max-batch", "500", "--log-every", "1"]
    with open(log_file, "ab") as out:
        proc = subprocess.Popen(args, env=envvars | {PAUSE_ENV: "120"}, cwd=REPO_ROOT,
                                stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    store = connect(s.clickhouse_url)
    try:
        deadline = time.monotonic() + 120
        while "pausing" not in log_file.read_text():
            assert proc.poll() is None, log_file.read_text()[-3000:]
            assert time.monotonic() < deadline, log_file.read_text()[-3000:]
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        n = sum(
            store.query(f"SELECT count() AS n FROM {t}")[0]["n"] for t in TRADING_TABLES.values()
        )
        assert 0 < n <= 500  # the first batch is in ClickHouse ...
        assert set(committed(s, s.trading_group_id).values()) == {None}  # ... not committed

        with open(log_file, "ab") as out:
            res = subprocess.run([*args, "--until-idle", "3"], env=envvars, cwd=REPO_ROOT,
                                 stdout=out, stderr=subprocess.STDOUT, timeout=300)  # fmt: skip
        text = log_file.read_text()
        assert res.returncode == 0, text[-3000:]
        assert f"wrote {messages.count():,} rows" in text
        assert committed(s, s.trading_group_id) == ends
        assert_tables_equal_messages(store, messages)
        assert pnl_daily_clickhouse(store) == pnl_daily_pandas(messages.equity)

        # --from-beginning: the same group re-writes everything, FINAL unchanged
        with open(log_file, "ab") as out:
            res = subprocess.run([*args, "--until-idle", "3", "--from-beginning"], env=envvars,
                                 cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                 timeout=300)  # fmt: skip
        text = log_file.read_text()
        assert res.returncode == 0, text[-3000:]
        assert text.count(f"wrote {messages.count():,} rows") == 2
        assert_tables_equal_messages(store, messages)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        store.close()


def test_fields_match_the_migrated_tables(env: Settings) -> None:
    with connect(env.clickhouse_url) as store:
        store.migrate()
        for kind, table in TRADING_TABLES.items():
            assert list(store.table_columns(table)) == [f for f, _ in FIELDS[kind]]
