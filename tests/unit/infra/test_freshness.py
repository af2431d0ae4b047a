"""Freshness rows and Prometheus metrics (infra/freshness.py), the writers' hooks, and
`candleflow status` with every service down (no service started here: fast)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from infra.clickhouse import load_migrations
from infra.freshness import (
    STAGES,
    Observation,
    freshness_rows,
    observe,
    start_metrics_server,
    watermark_delay_ms,
)
from infra.local import free_port
from infra.settings import REPO_ROOT, Settings
from jobs.writers.config import Batch
from jobs.writers.trading import TradingWriter

E = 1_700_000_040_000  # a bar end


def _settings(tmp_path: Path, **kw: object) -> Settings:
    return Settings(state_dir=tmp_path, metrics_port=0, **kw)  # type: ignore[arg-type]


def test_rows_lag_and_delays(tmp_path: Path) -> None:
    s = _settings(tmp_path, watermark_delay_ms=5000, features_watermark_delay_ms=300)
    assert watermark_delay_ms(s, "trade") == 0
    assert watermark_delay_ms(s, "candle") == 5000
    for st in ("feature_redis", "prediction", "order"):
        assert watermark_delay_ms(s, st) == 5300
    with pytest.raises(ValueError, match="unknown stage"):
        watermark_delay_ms(s, "nope")
    rows = freshness_rows(
        "candle",
        [
            ("BTCUSDT", "1m", E, E + 5250),
            Observation("ETHUSDT", "5m", E, E + 4000),
            {"symbol": "SOLUSDT", "timeframe": "1m", "window_end_ms": E, "observed_at_ms": E},
        ],
        settings=s,
        observed_by="test",
    )
    assert [r["lag_ms"] for r in rows] == [250, -1000, -5000]
    assert rows[0] == {
        "stage": "candle",
        "symbol": "BTCUSDT",
        "timeframe": "1m",
        "window_end_ms": E,
        "observed_at_ms": E + 5250,
        "lag_ms": 250,
        "watermark_delay_ms": 5000,
        "observed_by": "test",
    }


def test_rows_fit_the_table() -> None:
    """Every key of a row is an insertable column of migration 006's table."""
    (m,) = [m for m in load_migrations() if m.version == 6]
    text = m.path.read_text().split("CREATE TABLE", 1)[1]
    row = freshness_rows("trade", [("X", "1m", 1, 2)], settings=Settings(), observed_by="t")[0]
    for col in row:
        assert f"\n    {col} " in text, col
    assert set(STAGES) >= {"candle", "feature_redis", "prediction", "order"}


def _sample(name: str, labels: dict[str, str]) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_observe_metrics(tmp_path: Path) -> None:
    s = _settings(tmp_path, watermark_delay_ms=1000)
    lbl = {"stage": "order", "timeframe": "7m"}
    before = _sample("candleflow_stage_lag_seconds_count", lbl) or 0.0
    rows = freshness_rows(
        "order",
        [("AAA", "7m", E, E + 1000 + 40), ("AAA", "7m", E + 60_000, E + 61_000 + 20_000)],
        settings=s,
        observed_by="t",
    )
    observe(rows)
    assert _sample("candleflow_stage_lag_seconds_count", lbl) == before + 2
    assert _sample("candleflow_stage_lag_seconds_bucket", lbl | {"le": "0.05"}) == before + 1
    g = {"stage": "order", "symbol": "AAA", "timeframe": "7m"}
    assert _sample("candleflow_stage_last_window_end_seconds", g) == (E + 60_000) / 1000
    observe(freshness_rows("order", [("AAA", "7m", E, E)], settings=s, observed_by="t"))
    # a replayed older bar does not move the gauge back
    assert _sample("candleflow_stage_last_window_end_seconds", g) == (E + 60_000) / 1000


def test_metrics_server(tmp_path: Path) -> None:
    assert start_metrics_server(_settings(tmp_path)) is None  # 0 = off
    port = free_port()
    s = _settings(tmp_path).model_copy(update={"metrics_port": port})
    assert start_metrics_server(s) == port
    assert start_metrics_server(s) == port  # idempotent
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "candleflow_stage_lag_seconds" in body
    assert "candleflow_writer_rows_total" in body
    with socket.socket() as taken:  # a port in use: warning, no exception
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = s.model_copy(update={"metrics_port": taken.getsockname()[1]})
        assert start_metrics_server(busy) is None


def test_trading_writer_freshness_rows(tmp_path: Path) -> None:
    s = _settings(tmp_path, watermark_delay_ms=2000)
    w = TradingWriter(s)
    order = {
        "strategy": "cf1",
        "timeframe": "1m",
        "client_order_id": f"cf1-BTCUSDT-{E}-buy",
        "symbol": "BTCUSDT",
        "bar_end_ms": E,
        "side": "buy",
        "qty": 0.01,
        "decision_price": 100.0,
        "reason": "signal_entry",
        "signal": 0.2,
        "status": "new",
    }
    t0 = int(time.time() * 1000)
    row = w.parse(s.topic_orders, json.dumps(order).encode())
    pred = {
        "symbol": "ETHUSDT",
        "timeframe": "1m",
        "bar_end_ms": E,
        "model_tag": None,
        "p_down": None,
        "p_flat": None,
        "p_up": None,
        "signal": None,
        "status": "degraded",
        "reason": "down",
        "latency_ms": None,
        "predicted_at_ms": E + 2500,
    }
    prow = w.parse(s.topic_predictions, json.dumps(pred).encode())
    batch = Batch(rows={s.topic_orders: [row], s.topic_predictions: [prow]})
    fresh = {r["stage"]: r for r in w.freshness(batch)}
    assert fresh["prediction"]["lag_ms"] == 500
    assert fresh["prediction"]["symbol"] == "ETHUSDT"
    o = fresh["order"]
    assert o["symbol"] == "BTCUSDT" and o["window_end_ms"] == E
    assert t0 <= o["observed_at_ms"] <= int(time.time() * 1000)
    assert o["lag_ms"] == o["observed_at_ms"] - E - 2000
    assert w.freshness(Batch()) == []  # consumed with its batch


def test_status_with_everything_down(tmp_path: Path) -> None:
    """`candleflow status [--json]`: each section says why it has no data; no traceback."""
    dead = free_port()
    env = os.environ | {
        "CANDLEFLOW_STATE_DIR": str(tmp_path),
        "CANDLEFLOW_KAFKA_BOOTSTRAP": f"127.0.0.1:{dead}",
        "CANDLEFLOW_REDIS_PORT": str(free_port()),
        "CANDLEFLOW_FLINK_REST_PORT": str(free_port()),
        "CANDLEFLOW_CLICKHOUSE_PORT": str(free_port()),
        "CANDLEFLOW_CLICKHOUSE_HTTP_PORT": str(free_port()),
    }
    cli = [sys.executable, "-m", "jobs.cli", "status"]
    t0 = time.monotonic()
    r = subprocess.run(
        [*cli, "--json"], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["services"]["broker"] == "stopped"
    assert rep["kafka"]["state"].startswith("not running")
    assert rep["flink"]["state"].startswith("not running")
    assert rep["freshness"]["state"].startswith("no data")
    # a ClickHouse server URL with nothing listening
    env["CANDLEFLOW_CLICKHOUSE_URL"] = f"clickhouse://127.0.0.1:{dead}/db"
    r = subprocess.run(cli, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert "kafka" in r.stdout and "not running" in r.stdout
    assert f"freshness: not running (nothing on 127.0.0.1:{dead})" in r.stdout
    assert time.monotonic() - t0 < 30
