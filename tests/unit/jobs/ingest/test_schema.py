# ruff: noqa: RUF001 - look-alike characters are the point of these cases
"""Trade validation rules (the ingestion side of the DLQ contract)."""

from __future__ import annotations

import json

import pytest

from infra.settings import REPO_ROOT
from jobs.ingest.schema import InvalidTrade, Trade, format_decimal, validate
from udfs.trade_contract import (
    FIELDS,
    OPTIONAL,
    REASONS,
    RULES,
    contract_json,
    sql_check,
    sql_reason,
    sql_text,
)

GOOD = {
    "ts_ms": 1680652700452,
    "symbol": "BTCUSDT.UM",
    "price": "28145.1",
    "qty": "0.002",
    "side": "sell",
    "trade_id": 3535186032,
    "exchange": "binance",
}


def test_valid_trade_normalised() -> None:
    t = validate(json.dumps(GOOD))
    assert t == Trade(
        1680652700452, "BTCUSDT.UM", "28145.1", "0.002", "sell", 3535186032, "binance"
    )
    # JSON numbers are accepted and kept as the text the job reads (BigDecimal's)
    assert validate({**GOOD, "price": 28145.1, "qty": 2}).price == "28145.1"
    assert validate({**GOOD, "symbol": "BTCUSD_PERP.CM"}).symbol == "BTCUSD_PERP.CM"
    # decimal text is kept exactly, and integer text becomes the integer
    t = validate({**GOOD, "price": "354.11000000", "ts_ms": "1680652700452", "trade_id": "007"})
    assert (t.price, t.ts_ms, t.trade_id) == ("354.11000000", 1680652700452, 7)
    assert validate({k: v for k, v in GOOD.items() if k != "exchange"}).exchange == "unknown"


def test_future_bound_follows_the_clock_and_the_setting() -> None:
    now = 1680652700000  # the clock counts whole seconds, like UNIX_TIMESTAMP() in the job
    t = {**GOOD, "ts_ms": now}
    assert validate(t, now_ms=now - 60_000).ts_ms == now  # exactly at the bound
    assert validate(t, now_ms=now - 59_001).ts_ms == now  # the same whole second
    with pytest.raises(InvalidTrade, match="ts_ms in the future"):
        validate(t, now_ms=now - 61_000)
    assert validate(t, now_ms=now - 61_000, max_future_ms=61_000).ts_ms == now
    with pytest.raises(InvalidTrade, match="ts_ms in the future"):
        validate({**GOOD, "ts_ms": 3_786_912_000_000})  # 2090, against the real clock


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ("{", "not a JSON object"),
        ("[1,2]", "not a JSON object"),
        ({"ts_ms": None}, "missing field ts_ms"),
        ({"ts_ms": "soon"}, "ts_ms is not an integer"),
        ({"ts_ms": 12}, "ts_ms out of range"),
        ({"symbol": None}, "missing field symbol"),
        ({"symbol": "btc/usdt"}, "unknown symbol format"),
        ({"symbol": "ETHUSDT.UM\n"}, "unknown symbol format"),
        ({"price": "３４２４"}, "price is not numeric"),
        ({"price": "3_424.5"}, "price is not numeric"),
        ({"ts_ms": 1721347022707.5}, "ts_ms is not an integer"),
        ({"trade_id": 1.5}, "trade_id is not a non-negative integer"),
        ({"trade_id": 2**63}, "trade_id is not a non-negative integer"),
        ({"ts_ms": 3_786_912_000_000}, "ts_ms in the future"),
        ({"price": None}, "missing field price"),
        ({"price": "abc"}, "price is not numeric"),
        ({"price": "NaN"}, "price is not numeric"),
        ({"price": "1e30"}, "price is not numeric"),
        ({"price": "0"}, "price must be > 0"),
        ({"price": "-1"}, "price must be > 0"),
        ({"price": "0.123456789"}, "price needs more than 8 decimals or 12 digits"),
        ({"price": "1000000000000"}, "price needs more than 8 decimals or 12 digits"),
        ({"qty": "0"}, "qty must be > 0"),
        ({"qty": "20000000000"}, "qty needs more than 8 decimals or 10 digits"),
        ({"side": "hold"}, "side must be buy or sell"),
        ({"side": None}, "missing field side"),
        ({"trade_id": "x1"}, "trade_id is not a non-negative integer"),
        ({"trade_id": -1}, "trade_id is not a non-negative integer"),
        ({"trade_id": None}, "missing field trade_id"),
    ],
)
def test_invalid_trades_have_reasons(change: str | dict[str, object], reason: str) -> None:
    raw = change if isinstance(change, str) else json.dumps({**GOOD, **change})
    with pytest.raises(InvalidTrade) as e:
        validate(raw)
    assert e.value.reason == reason
    assert e.value.payload == raw


def test_format_decimal_is_plain_and_exact() -> None:
    assert format_decimal(1e-05) == "0.00001"
    assert format_decimal(28145.1) == "28145.1"
    assert format_decimal(3.0) == "3"


def test_job_contract_is_the_rule_table() -> None:
    """The job's TRADE_CHECK gets the rule table itself, in the contract's order."""
    c = json.loads(contract_json(60_000))
    assert [(r["field"], r["kind"], r["reason"]) for r in c["rules"]] == [
        (r.field, r.kind, r.reason) for r in RULES
    ]
    assert c["fields"] == list(FIELDS) and c["optional"] == OPTIONAL
    assert c["max_future_ms"] == 60_000 and c["not_a_json_object"] == REASONS[0]
    assert set(REASONS) == {c["not_a_json_object"]} | {r["reason"] for r in c["rules"]} | {
        f"{f} is not a scalar" for f in FIELDS
    }
    call = sql_check(60_000)
    assert call.startswith("TRADE_CHECK(payload, '") and "''" not in contract_json(60_000)
    assert sql_reason("c") == f"c[{len(FIELDS) + 1}]" and sql_text("price", "c") == "c[3]"
    candles_sql = (REPO_ROOT / "sql" / "flink" / "candles.sql").read_text()
    # the check is used twice, from the one table: event time and reason
    assert "(${trade_reason_at_source}) IS NULL" in candles_sql
    assert "${trade_reason} AS reason" in candles_sql


def test_rule_regexes_mean_the_same_without_re_flags() -> None:
    """Anchors are \\A ... (?![\\s\\S]): no $ (which also matches before a final newline)."""
    for rule in RULES:
        if rule.kind in ("regex", "not_regex"):
            assert rule.arg.startswith("\\A(?:") and rule.arg.endswith("(?![\\s\\S])")
            assert "$" not in rule.arg and "\\d" not in rule.arg and "\\w" not in rule.arg
