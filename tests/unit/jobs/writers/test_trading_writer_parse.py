"""Trading writer: message validation (what goes to the DLQ and why), the topic layouts vs
the producers' and the tables', DLQ record shape. The writer itself is tested on real
services in tests/integration/jobs/writers/test_trading_writer.py."""

from __future__ import annotations

import json
import math
import re
from typing import Any

import pytest

from infra.clickhouse import TRADING_TABLES, load_migrations
from infra.settings import Settings
from jobs.writers.trading import (
    FIELDS,
    KINDS,
    InvalidTradingMessage,
    dlq_topic,
    parse_trading_message,
    topic_kinds,
    trading_config,
)
from udfs.predict_client import KEY_COLUMNS, PREDICTION_COLUMNS
from udfs.strategy import EQUITY_COLUMNS, FILL_COLUMNS, ORDER_COLUMNS

T = 1_609_459_260_000  # 2021-01-01T00:01Z, a bar end


def good(kind: str) -> dict[str, Any]:
    """One message per topic, as the strategy job writes it (Flink JSON, key field too)."""
    return {
        "predictions": {
            "prediction_key": "BTCUSDT|1m",
            "symbol": "BTCUSDT",
            "timeframe": "1m",
            "bar_end_ms": T,
            "model_tag": "candleflow_xgb:abc123",
            "p_down": 0.2,
            "p_flat": 0.5,
            "p_up": 0.3,
            "signal": 0.3 - 0.2,
            "status": "ok",
            "reason": None,
            "latency_ms": 3.25,
            "predicted_at_ms": 1_700_000_000_123,
        },
        "orders": {
            "client_order_id": f"cf1-BTCUSDT-{T}-buy",
            "symbol": "BTCUSDT",
            "bar_end_ms": T,
            "side": "buy",
            "qty": 0.034,
            "decision_price": 28_999.99,
            "reason": "signal_entry",
            "signal": 0.125,
            "status": "new",
            "strategy": "cf1",
            "timeframe": "1m",
        },
        "fills": {
            "client_order_id": f"cf1-BTCUSDT-{T}-buy",
            "symbol": "BTCUSDT",
            "bar_end_ms": T + 60_000,
            "side": "buy",
            "qty": 0.034,
            "price": 29_005.8,
            "fee": 0.986,
            "position_after": 0.034,
            "avg_entry_after": 29_005.8,
            "realized_pnl": 0.0,
            "cash_after": 9_012.8,
            "strategy": "cf1",
            "timeframe": "1m",
        },
        "equity": {
            "bar_end_ms": T,
            "cash": 10_000.0,
            "equity": 10_000.0,
            "gross": 0.0,
            "realized_pnl": 0.0,
            "fees_paid": 0.0,
            "killed": False,
            "degraded": 2,
            "strategy": "cf1",
            "timeframe": "1m",
        },
    }[kind]


def enc(obj: Any) -> bytes:
    return json.dumps(obj).encode()


# ------------------------------------------------------------------------------ layouts
def test_fields_are_the_producers_layouts() -> None:
    """The writer accepts exactly what udfs/strategy.py + the strategy job emit."""
    names = {k: [f for f, _ in spec] for k, spec in FIELDS.items()}
    extra = {"strategy", "timeframe"}  # udfs/flink_strategy.EXTRA_COLUMNS
    assert set(names["orders"]) == set(ORDER_COLUMNS) | extra
    assert set(names["fills"]) == set(FILL_COLUMNS) | extra
    assert set(names["equity"]) == set(EQUITY_COLUMNS) | extra
    assert names["predictions"] == [*KEY_COLUMNS, *PREDICTION_COLUMNS]
    assert tuple(FIELDS) == KINDS


def test_fields_are_the_tables_columns() -> None:
    """Migration 005's insertable columns are the fields, in order (SELECT * = message)."""
    (m,) = [m for m in load_migrations() if m.name == "strategy"]
    tables: dict[str, list[str]] = {}
    for stmt in m.statements:
        hit = re.match(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\) ENGINE", stmt, re.S)
        if hit:
            cols = [ln.strip().rstrip(",") for ln in hit.group(2).strip().splitlines()]
            tables[hit.group(1)] = [c.split()[0] for c in cols if " MATERIALIZED " not in c]
    for kind, table in TRADING_TABLES.items():
        assert tables[table] == [f for f, _ in FIELDS[kind]], table


# ------------------------------------------------------------------------------ parsing
@pytest.mark.parametrize("kind", KINDS)
def test_valid_messages_round_trip_in_table_order(kind: str) -> None:
    msg = good(kind) | {"extra": [1, 2]}
    row = parse_trading_message(kind, enc(msg))
    assert list(row) == [f for f, _ in FIELDS[kind]]  # key field and extras dropped
    assert row == {f: msg[f] for f in row}


def test_values_are_normalised() -> None:
    p = good("predictions") | {"status": "degraded", "reason": "circuit_open: x"}
    p |= dict.fromkeys(("p_down", "p_flat", "p_up", "signal", "model_tag", "latency_ms"))
    row = parse_trading_message("predictions", enc(p))
    assert row["model_tag"] == "" and row["latency_ms"] is None and row["p_up"] is None
    o = good("orders") | {"bar_end_ms": float(T), "qty": 2, "signal": None}
    row = parse_trading_message("orders", enc(o))
    assert row["bar_end_ms"] == T and isinstance(row["bar_end_ms"], int)
    assert row["qty"] == 2.0 and isinstance(row["qty"], float) and row["signal"] is None
    # a bare NaN (Python's json) in a nullable number stays NaN
    text = enc(good("orders")).replace(b'"signal": 0.125', b'"signal": NaN')
    assert math.isnan(parse_trading_message("orders", text)["signal"])
    rej = good("orders") | {"status": "rejected", "reason": "insufficient_cash"}
    assert parse_trading_message("orders", enc(rej))["status"] == "rejected"
    assert parse_trading_message("equity", enc(good("equity") | {"killed": True}))["killed"]


BAD: list[tuple[str, Any, str]] = [
    ("orders", b"", "empty message"),
    ("orders", None, "empty message"),
    ("orders", b"{nope", "not JSON"),
    ("fills", b"\xff\xfe", "not JSON"),
    ("equity", b"[1, 2]", "not a JSON object"),
    ("equity", b'{"strategy": "cf1"}', "missing fields: timeframe, bar_end_ms, cash"),
    ("orders", {"symbol": ""}, "symbol: expected a non-empty string"),
    ("orders", {"side": "short"}, "side: expected one of buy, sell, got 'short'"),
    ("orders", {"reason": "yolo"}, "reason: expected one of signal_entry"),
    ("orders", {"status": "filled"}, "status: expected one of new, rejected"),
    ("orders", {"qty": "1.0"}, "qty: expected a finite number"),
    ("orders", {"qty": None}, "qty: expected a finite number"),
    ("orders", {"qty": True}, "qty: expected a finite number"),
    ("orders", {"signal": "0.1"}, "signal: expected a number or null"),
    ("orders", {"bar_end_ms": 1.5}, "bar_end_ms: expected an integer"),
    ("orders", {"bar_end_ms": 0}, "bar_end_ms: out of range for epoch ms of a bar end"),
    ("orders", {"bar_end_ms": 2**62}, "bar_end_ms: out of range for epoch ms of a bar end"),
    ("orders", {"bar_end_ms": "1609459260000"}, "bar_end_ms: expected an integer"),
    ("fills", {"price": 1e400}, "price: expected a finite number"),
    ("fills", {"client_order_id": 7}, "client_order_id: expected a non-empty string"),
    ("equity", {"killed": 0}, "killed: expected true/false"),
    ("equity", {"degraded": -1}, "degraded: out of range for UInt32 [0, 2**32)"),
    ("equity", {"degraded": True}, "degraded: expected an integer"),
    ("predictions", {"status": "maybe"}, "status: expected one of ok, degraded, refused"),
    ("predictions", {"p_up": None}, "status ok needs numbers in p_up"),
    ("predictions", {"status": "refused"}, "status refused must have null p_down, p_flat"),
    ("predictions", {"reason": 5}, "reason: expected a string or null"),
    ("predictions", {"model_tag": 5}, "model_tag: expected a string or null"),
    ("predictions", {"predicted_at_ms": -1}, "predicted_at_ms: out of range for epoch ms"),
]


@pytest.mark.parametrize(("kind", "change", "reason"), BAD)
def test_malformed_messages_have_a_reason(kind: str, change: Any, reason: str) -> None:
    raw = enc(good(kind) | change) if isinstance(change, dict) else change
    with pytest.raises(InvalidTradingMessage) as e:
        parse_trading_message(kind, raw)
    assert reason in e.value.reason


def test_nan_in_a_required_number_is_rejected() -> None:
    text = enc(good("fills")).replace(b'"fee": 0.986', b'"fee": NaN')
    with pytest.raises(InvalidTradingMessage, match="fee: expected a finite number"):
        parse_trading_message("fills", text)
    text = enc(good("predictions")).replace(b'"p_flat": 0.5', b'"p_flat": NaN')
    with pytest.raises(InvalidTradingMessage, match="status ok needs numbers in p_flat"):
        parse_trading_message("predictions", text)
    with pytest.raises(ValueError, match="unknown trading topic"):
        parse_trading_message("trades", b"{}")


# ------------------------------------------------------------------------- topics, config
def test_topics_dlqs_and_config() -> None:
    s = Settings(topic_orders="o", topic_fills="f", trading_group_id="g1")
    assert topic_kinds(s) == {"predictions": "predictions", "o": "orders", "f": "fills",
                              "equity": "equity"}  # fmt: skip
    assert dlq_topic("o") == "o_dlq"
    cfg = trading_config(s, max_batch=7, group_id=None)
    assert (cfg.group_id, cfg.max_batch, cfg.from_beginning) == ("g1", 7, False)
    assert trading_config(s, group_id="other").group_id == "other"
    with pytest.raises(ValueError, match="must differ"):
        topic_kinds(Settings(topic_orders="x", topic_fills="x"))


def test_dlq_record_names_the_trading_writer() -> None:
    from jobs.writers.dlq import dlq_record

    rec = json.loads(dlq_record("not JSON: x", b"{nope", "orders", 0, 7, "trading_writer"))
    assert rec["detected_by"] == "trading_writer"
    assert (rec["source_topic"], rec["source_offset"], rec["payload"]) == ("orders", 7, "{nope")
