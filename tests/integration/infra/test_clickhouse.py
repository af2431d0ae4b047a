"""The analytics store on both backends: Debian's ClickHouse 18.16 server and chDB 26.9.

Every test runs twice (``store`` is parametrized) on a fresh database; the same migration
files, rows and assertions serve both. Nothing is mocked.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from infra.clickhouse import (
    MIGRATIONS_DIR,
    ClickHouseError,
    ClickHouseStore,
    candles_row,
    connect,
    features_columns,
    features_row,
    load_migrations,
)
from infra.local import ClickHouseServer
from udfs.indicators import FEATURE_NAMES

pytestmark = pytest.mark.integration

TABLES = {
    "trades",
    "candles",
    "features",
    "feature_freshness",
    "feature_freshness_mv",
    "predictions",
    "signals",
    "orders",
    "fills",
    "equity",
    "pnl_daily",
    "pnl_daily_mv",
    "pnl_daily_view",
    "trading_predictions",
    "trading_orders",
    "trading_fills",
    "trading_equity",
    "trading_pnl_daily_mv",
    "pipeline_freshness",
    "schema_migrations",
}


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # chDB opens one data path per process: all chDB tests share it, one database each
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture(params=["server", "chdb"])
def store_url(request: pytest.FixtureRequest, chdb_path: Path) -> str:
    db = f"t_{uuid.uuid4().hex[:10]}"
    if request.param == "server":
        server: ClickHouseServer = request.getfixturevalue("clickhouse_server")
        return server.url_for(db)
    return f"chdb://{chdb_path}?database={db}"


@pytest.fixture
def store(store_url: str) -> Iterator[ClickHouseStore]:
    s = connect(store_url)
    yield s
    s.execute(f"DROP DATABASE IF EXISTS {s.database}")
    s.close()


@pytest.fixture
def migrated(store: ClickHouseStore) -> ClickHouseStore:
    store.migrate()
    return store


def bits(v: Any) -> Any:
    """Exact comparison: floats by their bit pattern (NaN == NaN, -0.0 != 0.0)."""
    if isinstance(v, float):
        return ("f", struct.pack("<d", v))
    if isinstance(v, dict):
        return {k: bits(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [bits(x) for x in v]
    return v


TRICKY = [0.1 + 0.2, 1 / 3, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, -0.0]
TRICKY += [28145.10000001, 1e-8, 123456789.12345678, math.pi, -math.e]


# --------------------------------------------------------------------------- migrations
def test_migrations_apply_once_then_noop(store: ClickHouseStore) -> None:
    expected = [f"{m.version:03d}_{m.name}" for m in load_migrations()]
    assert store.migrate() == expected
    names = {r["name"] for r in store.query(
        f"SELECT name FROM system.tables WHERE database = '{store.database}'"
    )}  # fmt: skip
    assert names == TABLES
    assert store.migrate() == []  # re-apply: nothing to do
    applied = store.applied_migrations()
    assert sorted(applied) == [m.version for m in load_migrations()]
    assert all(applied[m.version]["checksum"] == m.checksum for m in load_migrations())
    # the statements themselves are re-runnable too (IF NOT EXISTS everywhere)
    for m in load_migrations():
        for stmt in m.statements:
            store.execute(stmt)
    assert len(store.query("SELECT * FROM schema_migrations FINAL")) == len(expected)


def test_edited_applied_migration_is_rejected(store: ClickHouseStore, tmp_path: Path) -> None:
    sql_dir = tmp_path / "sql"
    shutil.copytree(MIGRATIONS_DIR, sql_dir)
    store.migrate(sql_dir)
    f = sql_dir / "003_predictions_signals.sql"
    f.write_text(f.read_text().replace("prob_up Float64", "prob_up Float32"))
    with pytest.raises(ClickHouseError, match="003_predictions_signals changed"):
        store.migrate(sql_dir)


def test_features_table_is_the_features_topic(migrated: ClickHouseStore) -> None:
    cols = migrated.table_columns("features")
    assert list(cols) == features_columns()
    assert all(cols[n] == "Nullable(Float64)" for n in FEATURE_NAMES)
    assert cols["features_ready"] == "UInt8" and cols["computed_at"] == "Int64"


# ------------------------------------------------------------------- dedupe with FINAL
def _candle(ws: int, close: float, emitted_at: str, symbol: str = "BTCUSDT") -> dict[str, Any]:
    return candles_row(
        {
            "symbol": symbol,
            "timeframe": "1m",
            "window_start_ms": ws,
            "window_end_ms": ws + 60_000,
            "open": 28145.1,
            "high": 28150.00000001,
            "low": 28100.5,
            "close": close,
            "volume": 12.345678,
            "quote_volume": 347_456.78901234,
            "vwap": 28140.123456789,
            "trade_count": 42,
            "buy_volume": 6.0,
            "sell_volume": 6.345678,
            "first_trade_id": 3535186032,
            "last_trade_id": 3535186073,
            "emitted_at": emitted_at,
        }
    )


def test_candles_duplicates_collapse_to_newest(migrated: ClickHouseStore) -> None:
    t0 = 1_680_652_680_000
    first = [_candle(t0 + i * 60_000, 28000.0 + i, "2023-04-05T00:00:00.000Z") for i in range(5)]
    # re-delivery (at-least-once): same keys, one of them twice in the same block, newer
    # versions for i=1..2, an OLDER version for i=3 arriving later
    again = [
        _candle(t0 + 60_000, 1.5, "2023-04-05T00:00:01.000Z"),
        _candle(t0 + 60_000, 2.5, "2023-04-05T00:00:02.000Z"),
        _candle(t0 + 120_000, TRICKY[0], "2023-04-05T00:00:01.000Z"),
        _candle(t0 + 180_000, 9.9, "2023-04-04T23:59:59.000Z"),
    ]
    migrated.insert("candles", first)
    migrated.insert("candles", again)
    # stored until a merge: 9 rows on 18.16; 8 on chDB, whose optimize_on_insert already
    # collapses duplicates inside one INSERT block
    assert migrated.query("SELECT count() AS n FROM candles")[0]["n"] in (8, 9)
    got = migrated.query("SELECT * FROM candles FINAL ORDER BY window_start_ms")
    want = [first[0], again[1], again[2], first[3], first[4]]
    assert bits(got) == bits(want)
    assert got[1]["emitted_at"] == 1_680_652_802_000  # ISO text -> epoch ms


WS = 1_609_459_200_000


def _features_message(ws: int, computed_at: str, seed: int, warm: bool) -> dict[str, Any]:
    rnd = random.Random(seed)
    feats = {n: (rnd.choice(TRICKY) * rnd.random() if warm or i % 3 else None)
             for i, n in enumerate(FEATURE_NAMES)}  # fmt: skip
    msg = {
        "feature_key": "ETHUSDT|5m",
        "symbol": "ETHUSDT",
        "timeframe": "5m",
        "window_start_ms": ws,
        "window_end_ms": ws + 300_000,
        "open": 1800.12345678,
        "high": 1810.0,
        "low": 1799.99999999,
        "close": TRICKY[seed % len(TRICKY)],
        "volume": 123456.00000001,
        "vwap": 1805.5555555555557,
        "trade_count": 999,
        **feats,
        "features_ready": all(v is not None for v in feats.values()),
        "event_time": "2021-01-01T00:04:59.999Z",
        "computed_at": computed_at,
    }
    # exactly what a consumer sees: the JSON text of the topic, parsed
    return json.loads(json.dumps(msg))


def _features(i: int, computed_at: str, seed: int, warm: bool) -> dict[str, Any]:
    return features_row(_features_message(WS + i * 300_000, computed_at, seed, warm))


def test_features_roundtrip_exact_and_newest_wins(migrated: ClickHouseStore) -> None:
    old = [_features(i, "2021-01-01T00:05:00.100Z", i, i > 1) for i in range(4)]
    new = [_features(i, "2021-01-01T00:05:00.200Z", 10 + i, True) for i in range(2)]
    migrated.insert("features", new)  # the newer version arrives first
    migrated.insert("features", old)
    got = migrated.query("SELECT * FROM features FINAL ORDER BY window_start_ms")
    assert bits(got) == bits([new[0], new[1], old[2], old[3]])
    assert got[0]["event_time"] == 1_609_459_499_999
    # not-warm features stay NULL (not NaN, not 0)
    cold = migrated.query(
        f"SELECT sma_10, features_ready FROM features WHERE computed_at = {old[0]['computed_at']} "
        f"AND window_start_ms = {WS}"
    )
    assert old[0]["sma_10"] is None and cold == [{"sma_10": None, "features_ready": 0}]


def test_nan_and_null_are_different(migrated: ClickHouseStore) -> None:
    row = features_row(_features_message(0, "1970-01-01T00:00:00.001Z", 1, True))
    row |= {"sma_10": None, "sma_20": float("nan"), "sma_50": -0.0, "close": float("nan")}
    migrated.insert("features", [row])
    got = migrated.query("SELECT * FROM features FINAL")
    assert bits(got) == bits([row])
    assert got[0]["sma_10"] is None and math.isnan(got[0]["sma_20"])


def test_orders_latest_state_and_fills_dedupe(migrated: ClickHouseStore) -> None:
    def order(status: str, filled: float, avg: float | None, t: int) -> dict[str, Any]:
        return {
            "client_order_id": "cf-000001",
            "exchange_order_id": "" if status == "new" else "88123",
            "strategy": "xgb_v1",
            "symbol": "BTCUSDT",
            "side": "buy",
            "order_type": "market",
            "qty": 0.003,
            "limit_price": None,
            "status": status,
            "filled_qty": filled,
            "avg_fill_price": avg,
            "created_at_ms": 1000,
            "updated_at_ms": t,
        }

    states = [order("new", 0.0, None, 1000), order("partially_filled", 0.001, 28145.1, 1001),
              order("filled", 0.003, 28145.13333333, 1002)]  # fmt: skip
    other = order("new", 0.0, None, 5) | {"client_order_id": "cf-000002"}
    migrated.insert("orders", [states[2], other])
    migrated.insert("orders", [states[0]])
    migrated.insert("orders", [states[1], states[2]])
    got = migrated.query("SELECT * FROM orders FINAL ORDER BY client_order_id")
    assert bits(got) == bits([states[2], other])
    assert got[1]["avg_fill_price"] is None and got[1]["limit_price"] is None

    fill = {
        "fill_id": "88123-1",
        "client_order_id": "cf-000001",
        "strategy": "xgb_v1",
        "symbol": "BTCUSDT",
        "side": "buy",
        "qty": 0.001,
        "price": 28145.1,
        "fee": 0.0000281451,
        "fee_asset": "USDT",
        "liquidity": "taker",
        "realized_pnl": 0.0,
        "ts_ms": 1001,
    }
    fill2 = fill | {"fill_id": "88123-2", "qty": 0.002, "price": 28145.15, "ts_ms": 1002}
    migrated.insert("fills", [fill, fill2])
    migrated.insert("fills", [fill])  # re-delivered
    assert bits(migrated.query("SELECT * FROM fills FINAL ORDER BY fill_id")) == bits([fill, fill2])
    migrated.execute("OPTIMIZE TABLE fills FINAL")  # a merge removes the duplicate for good
    assert migrated.query("SELECT count() AS n FROM fills")[0]["n"] == 2


# ------------------------------------------------------------------------ rollups (MVs)
def test_feature_freshness_rollup(migrated: ClickHouseStore) -> None:
    rows = [_features(i, f"2021-01-01T01:00:0{i}.000Z", i, i >= 2) for i in range(4)]
    migrated.insert("features", rows[:3])
    migrated.insert("features", rows[1:])  # overlap: duplicates must not move the maxima
    got = migrated.query(
        "SELECT symbol, timeframe, maxMerge(last_window_end_ms) AS last_end, "
        "maxMerge(last_computed_at) AS last_computed, "
        "maxMerge(last_ready_window_end_ms) AS last_ready, "
        "maxMerge(max_lag_ms) AS max_lag, countMerge(rows_written) AS n "
        "FROM feature_freshness GROUP BY symbol, timeframe"
    )
    ready = [r for r in rows if r["features_ready"]]
    assert got == [
        {
            "symbol": "ETHUSDT",
            "timeframe": "5m",
            "last_end": rows[3]["window_end_ms"],
            "last_computed": rows[3]["computed_at"],
            "last_ready": max(r["window_end_ms"] for r in ready),
            "max_lag": max(r["computed_at"] - r["window_end_ms"] for r in rows),
            "n": 6,
        }
    ]


def test_daily_pnl_rollup_ignores_duplicates(migrated: ClickHouseStore) -> None:
    day0 = 1_609_459_200_000  # 2021-01-01T00:00Z
    snaps = [(day0 + 1_000, 10_000.0), (day0 + 3_600_000, 10_050.5), (day0 + 7_200_000, 9_990.25),
             (day0 + 86_399_000, 10_020.125), (day0 + 86_400_000, 10_020.125),
             (day0 + 90_000_000, 10_100.0)]  # fmt: skip

    def row(ts: int, eq: float) -> dict[str, Any]:
        return {"strategy": "xgb_v1", "ts_ms": ts, "cash": eq / 2, "position_value": eq / 2,
                "equity": eq, "realized_pnl": eq - 10_000.0, "unrealized_pnl": 0.0,
                "fees": 1.25}  # fmt: skip

    migrated.insert("equity", [row(*s) for s in snaps])
    migrated.insert("equity", [row(*s) for s in snaps[2:4]])  # duplicates
    got = migrated.query(
        "SELECT toString(day) AS day, strategy, argMinMerge(open_equity) AS open, "
        "argMaxMerge(close_equity) AS close, minMerge(min_equity) AS lo, "
        "maxMerge(max_equity) AS hi, argMaxMerge(close_realized_pnl) AS realized "
        "FROM pnl_daily GROUP BY day, strategy ORDER BY day"
    )
    assert got == [
        {"day": "2021-01-01", "strategy": "xgb_v1", "open": 10_000.0, "close": 10_020.125,
         "lo": 9_990.25, "hi": 10_050.5, "realized": 20.125},
        {"day": "2021-01-02", "strategy": "xgb_v1", "open": 10_020.125, "close": 10_100.0,
         "lo": 10_020.125, "hi": 10_100.0, "realized": 100.0},
    ]  # fmt: skip
    assert migrated.query("SELECT count() AS n FROM equity FINAL")[0]["n"] == len(snaps)


# ------------------------------------------------------------------- DataFrames and CLI
def test_dataframe_insert_and_query_df(migrated: ClickHouseStore) -> None:
    df = pd.DataFrame(
        {
            "symbol": ["BTCUSDT", "BTCUSDT"],
            "timeframe": ["1m", "1m"],
            "window_start_ms": [60_000, 120_000],
            "model_tag": ["xgb_v1", "xgb_v1"],
            "model_version": ["3", "3"],
            "horizon_bars": [5, 5],
            "prob_up": [TRICKY[0], float("nan")],  # not Nullable: NaN stays NaN
            "predicted_label": [1, -1],
            "features_ready": [True, False],
            "latency_ms": [1.25, 0.5],
            "predicted_at_ms": [61_000, 121_000],
        }
    )
    assert migrated.insert("predictions", df) == 2
    got = migrated.query("SELECT * FROM predictions FINAL ORDER BY window_start_ms")
    assert got[0]["prob_up"] == TRICKY[0] and math.isnan(got[1]["prob_up"])
    assert [r["features_ready"] for r in got] == [1, 0]
    back = migrated.query_df("SELECT * FROM predictions FINAL ORDER BY window_start_ms")
    assert list(back.columns) == list(df.columns)
    assert back["prob_up"].iloc[0] == TRICKY[0] and back["latency_ms"].tolist() == [1.25, 0.5]
    # a DataFrame NaN in a Nullable column is NULL
    orders = pd.DataFrame({"client_order_id": ["a"], "limit_price": [float("nan")], "qty": [1]})
    migrated.insert("orders", orders)
    assert migrated.query("SELECT limit_price, qty FROM orders") == [
        {"limit_price": None, "qty": 1.0}
    ]
    with pytest.raises(ClickHouseError, match="no insertable column"):
        migrated.insert("orders", [{"nope": 1}])


def test_cli_migrate_and_query(store_url: str) -> None:
    from jobs.cli import app

    runner = CliRunner()
    assert runner.invoke(app, ["clickhouse", "--help"]).exit_code == 0
    res = runner.invoke(app, ["clickhouse", "migrate", "--url", store_url])
    assert res.exit_code == 0, res.output
    assert "applied 001_market_data" in res.output
    res = runner.invoke(app, ["clickhouse", "migrate", "--url", store_url])
    assert res.exit_code == 0 and "up to date" in res.output, res.output
    sql = "SELECT version, name FROM schema_migrations FINAL ORDER BY version"
    res = runner.invoke(app, ["clickhouse", "query", sql, "--url", store_url])
    assert res.exit_code == 0, res.output
    assert "predictions_signals" in res.output
    assert f"{len(load_migrations())} row(s)" in res.output
    res = runner.invoke(
        app, ["clickhouse", "query", "SELECT nope FROM nowhere", "--url", store_url]
    )
    assert res.exit_code == 1 and "error" in res.output
    with connect(store_url) as s:
        s.execute(f"DROP DATABASE IF EXISTS {s.database}")
