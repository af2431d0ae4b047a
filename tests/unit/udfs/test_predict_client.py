"""PredictClient without a prediction service: model schedule selection, /score payloads,
per-item results, local refusals, and degraded mode + circuit breaker against a closed
loopback port (a real refused connection, no HTTP mock). The client against the real
service is tested in tests/integration/jobs/flink/test_strategy_job.py."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from infra.local import free_port
from udfs.predict_client import (
    MAX_ITEMS,
    PREDICTION_COLUMNS,
    PredictClient,
    ScheduleEntry,
    build_items,
    empty_result,
    load_schedule,
    parse_schedule,
    schedule_tags,
)

FEATURES = ("close", "rsi_14", "features_ready")


def frame(n: int = 3, symbol: str = "BTCUSDT", start: int = 1_000) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "symbol": [symbol] * n,
            "timeframe": ["1m"] * n,
            "bar_end_ms": [start + 60_000 * k for k in range(n)],
            "close": [100.0 + k for k in range(n)],
            "rsi_14": [np.nan if k == 0 else 50.0 for k in range(n)],
            "features_ready": [True] * n,
        }
    )


def test_schedule_picks_the_last_entry_at_or_before_the_bar(tmp_path: Path) -> None:
    sched = parse_schedule([{"from_ms": 200, "tag": "m:b"}, {"from_ms": 100, "tag": "m:a"}])
    assert sched == [ScheduleEntry(100, "m:a"), ScheduleEntry(200, "m:b")]
    ends = np.array([50, 99, 100, 150, 199, 200, 10**13])
    assert schedule_tags(sched, ends) == [None, None, "m:a", "m:a", "m:a", "m:b", "m:b"]
    path = tmp_path / "schedule.json"
    path.write_text(json.dumps([{"from_ms": 100, "tag": "m:a"}]))
    assert load_schedule(path) == [ScheduleEntry(100, "m:a")]
    assert load_schedule(None) == []
    with pytest.raises(ValueError, match="repeated"):
        parse_schedule([{"from_ms": 1, "tag": "a"}, {"from_ms": 1, "tag": "b"}])
    path.write_text(json.dumps({"from_ms": 1}))
    with pytest.raises(ValueError, match="JSON list"):
        load_schedule(path)


def test_items_are_json_with_nulls_and_the_model_per_row() -> None:
    f = frame()
    f.loc[2, "close"] = np.inf
    items = build_items(f, FEATURES, ["m:a", None, "m:b"])
    assert items[0] == {
        "symbol": "BTCUSDT",
        "timeframe": "1m",
        "bar_end_ms": 1_000,
        "features": {"close": 100.0, "rsi_14": None, "features_ready": 1.0},
        "model": "m:a",
    }
    assert "model" not in items[1]
    assert items[2]["features"]["close"] is None  # inf is not JSON: null (service: not_ready)
    json.dumps(items, allow_nan=False)  # strict JSON
    assert isinstance(items[0]["bar_end_ms"], int)


def test_result_rows_from_per_item_answers() -> None:
    out = empty_result(3)
    PredictClient._apply(
        out,
        0,
        {
            "model_tag": "m:1",
            "probabilities": {"down": 0.2, "flat": 0.3, "up": 0.5},
            "signal": 0.3,
        },
    )
    PredictClient._apply(
        out, 1, {"error": {"status": 409, "reason": "lookahead", "message": "too early"}}
    )
    PredictClient._apply(out, 2, {"probabilities": {"up": 1.0}})
    assert list(out.columns) == list(PREDICTION_COLUMNS)
    assert out.loc[0, ["status", "model_tag", "p_down", "p_flat", "p_up"]].tolist() == [
        "ok",
        "m:1",
        0.2,
        0.3,
        0.5,
    ]
    assert out.loc[0, "signal"] == 0.5 - 0.2  # p_up - p_down in float64, as the engine
    assert out.loc[0, "reason"] is None
    assert out.loc[1, "status"] == "refused"
    assert out.loc[1, "reason"] == "lookahead: too early"
    assert np.isnan(out.loc[1, "p_up"])
    assert out.loc[2, "status"] == "degraded"
    assert out.loc[2, "reason"].startswith("malformed")


def test_rows_without_a_model_or_with_an_invalid_symbol_are_refused_without_a_call() -> None:
    client = PredictClient(
        f"http://127.0.0.1:{free_port()}",
        schedule=[{"from_ms": 10**12, "tag": "m:a"}],
        features=FEATURES,
    )
    out = client.score(frame(2, start=1_000))
    assert out.status.tolist() == ["refused", "refused"]
    assert out.reason.tolist() == ["no_model", "no_model"]
    assert client.stats["calls"] == 0
    bad = PredictClient(f"http://127.0.0.1:{free_port()}", features=FEATURES)
    out = bad.score(frame(1, symbol="btc usdt"))
    assert out.status.tolist() == ["refused"] and out.reason[0].startswith("invalid_input")
    assert bad.stats["calls"] == 0
    assert bad.score(frame(0)).empty


def test_unreachable_service_degrades_rows_and_opens_the_circuit() -> None:
    client = PredictClient(
        f"http://127.0.0.1:{free_port()}",  # nothing listens: connection refused
        timeout_s=1.0,
        retries=2,
        circuit_open_s=0.5,
        features=FEATURES,
        backoff_s=0.01,
    )
    out = client.score(frame(3))
    assert out.status.tolist() == ["degraded"] * 3
    assert out.reason.str.contains("ConnectionError").all()
    assert out.p_up.isna().all() and (out.latency_ms > 0).all()
    assert (out.predicted_at_ms > 1_600_000_000_000).all()
    assert client.stats == {"calls": 1, "failed_calls": 1, "retries": 2, "short_circuited": 0}
    assert client.circuit_open()
    # while open: degraded at once, no call
    out = client.score(frame(2))
    assert out.reason.str.startswith("circuit_open").all()
    assert client.stats["calls"] == 1 and client.stats["short_circuited"] == 1
    # after the interval: one try without retries, fails, opens again
    time.sleep(0.6)
    out = client.score(frame(1))
    assert out.status.tolist() == ["degraded"] and not out.reason[0].startswith("circuit")
    assert client.stats["calls"] == 2 and client.stats["retries"] == 2
    assert client.circuit_open()


def test_large_frames_are_split_at_the_endpoint_limit() -> None:
    client = PredictClient(
        f"http://127.0.0.1:{free_port()}",
        retries=0,
        circuit_open_s=60,
        features=FEATURES,
        max_items=10**6,
    )
    assert client.max_items == MAX_ITEMS
    out = client.score(frame(MAX_ITEMS + 5))
    # one failed call (first chunk), the second chunk short-circuited by the open circuit
    assert client.stats["calls"] == 1 and client.stats["short_circuited"] == 1
    assert (out.status == "degraded").all() and len(out) == MAX_ITEMS + 5
