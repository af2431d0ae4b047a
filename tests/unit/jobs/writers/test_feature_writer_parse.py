"""Feature writer: message validation (what goes to the DLQ and why), DLQ record shape,
which errors are retried. The writer itself is tested on real services in
tests/integration/jobs/writers/test_feature_writer.py."""

from __future__ import annotations

import json

import pytest
import redis

from infra.clickhouse import ClickHouseError, features_columns
from jobs.writers.features import (
    InvalidFeatureRow,
    dlq_record,
    is_transient,
    parse_feature_message,
)
from udfs.indicators import FEATURE_NAMES


def good() -> dict[str, object]:
    row: dict[str, object] = {
        "feature_key": "BTCUSDT|1m",
        "symbol": "BTCUSDT",
        "timeframe": "1m",
        "window_start_ms": 1617321600000,
        "window_end_ms": 1617321660000,
        "open": 58739.46,
        "high": 58800.0,
        "low": 58700.01,
        "close": 58760.5,
        "volume": 12.5,
        "vwap": 58755.1,
        "trade_count": 321,
        "features_ready": False,
        "event_time": "2021-04-02T00:00:59.999Z",
        "computed_at": "2026-11-23T11:26:07.744Z",
    }
    for i, f in enumerate(FEATURE_NAMES):
        row[f] = None if i % 2 else 0.5 * i
    return row


def test_valid_message_round_trips_in_contract_order() -> None:
    msg = good() | {"extra": 1}
    row = parse_feature_message(json.dumps(msg).encode())
    assert list(row) == features_columns()  # extra fields dropped
    assert row["trade_count"] == 321 and row[FEATURE_NAMES[1]] is None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty message"),
        (None, "empty message"),
        (b"{nope", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (json.dumps({"symbol": "X"}).encode(), "missing fields: feature_key"),
        (json.dumps(good() | {"symbol": ""}).encode(), "symbol: expected a non-empty string"),
        (json.dumps(good() | {"trade_count": 1.5}).encode(), "trade_count: expected an integer"),
        (json.dumps(good() | {"trade_count": True}).encode(), "trade_count: expected an integer"),
        (json.dumps(good() | {"close": "1.0"}).encode(), "close: expected a finite number"),
        (json.dumps(good() | {"close": None}).encode(), "close: expected a finite number"),
        (b'{"close": NaN}', "missing fields"),
        (json.dumps(good() | {FEATURE_NAMES[0]: "x"}).encode(), "expected a finite number or null"),
        (json.dumps(good() | {"features_ready": 1}).encode(), "features_ready: expected"),
        (json.dumps(good() | {"window_end_ms": 1617321600000}).encode(), "window_end_ms <="),
        (json.dumps(good() | {"event_time": "yesterday"}).encode(), "event_time: not an ISO"),
        (json.dumps(good() | {"computed_at": 5}).encode(), "computed_at: not an ISO"),
    ],
)
def test_malformed_messages_have_a_reason(raw: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidFeatureRow) as e:
        parse_feature_message(raw)
    assert reason in e.value.reason


def test_nan_price_is_rejected_and_integral_float_accepted() -> None:
    text = json.dumps(good()).replace('"open": 58739.46', '"open": NaN')
    with pytest.raises(InvalidFeatureRow, match="open: expected a finite number"):
        parse_feature_message(text.encode())
    assert (
        parse_feature_message(json.dumps(good() | {"trade_count": 3.0}).encode())["trade_count"]
        == 3
    )


def test_dlq_record_shape() -> None:
    rec = json.loads(dlq_record("not JSON: x", b"{nope\xff", "features", 0, 42))
    assert rec["reason"] == "not JSON: x" and rec["payload"] == "{nope\ufffd"
    assert (rec["source_topic"], rec["source_partition"], rec["source_offset"]) == (
        "features",
        0,
        42,
    )
    assert rec["detected_by"] == "feature_writer" and rec["detected_at"].endswith("+00:00")


def test_transient_errors() -> None:
    from clickhouse_driver import errors as ch

    assert is_transient(redis.ConnectionError("refused"))
    assert is_transient(redis.BusyLoadingError("LOADING"))
    assert is_transient(ConnectionRefusedError())
    assert is_transient(ch.NetworkError("down"))
    assert is_transient(ClickHouseError("cannot reach ClickHouse at h:1: x"))
    assert not is_transient(ClickHouseError("features: no insertable column(s) ['x']"))
    assert not is_transient(ValueError("bad data"))
    assert not is_transient(KeyError("bug"))
    assert not is_transient(redis.ResponseError("WRONGTYPE"))
