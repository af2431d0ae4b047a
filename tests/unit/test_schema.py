"""Trade validation rules (the ingestion side of the DLQ contract)."""

from __future__ import annotations

import json
import re

import pytest

from infra.settings import REPO_ROOT
from jobs.ingest.schema import InvalidTrade, Trade, format_decimal, validate

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
    # numbers are accepted and kept as their text
    assert validate({**GOOD, "price": 28145.1, "qty": 2}).price == "28145.1"
    assert validate({**GOOD, "symbol": "BTCUSD_PERP.CM"}).symbol == "BTCUSD_PERP.CM"


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


def test_sql_and_python_rules_agree() -> None:
    """The Flink job's CASE lists the same reasons, in the same order, as validate()."""
    sql = (REPO_ROOT / "sql" / "flink" / "candles.sql").read_text()
    case = sql.split("CREATE TEMPORARY VIEW trades_checked")[1].split("END AS reason")[0]
    sql_reasons = re.findall(r"THEN '([^']+)'", case)
    src = (REPO_ROOT / "jobs" / "ingest" / "schema.py").read_text()
    body = src.split("def validate(")[1]
    py_reasons = []
    for m in re.finditer(r'bad\(f?"([^"]+)"\)|InvalidTrade\("([^"]+)"', body):
        text = m.group(1) or m.group(2)
        if "{name}" in text:
            for name, digits in (("price", "12"), ("qty", "10")):
                py_reasons.append(text.replace("{name}", name).replace("{int_digits}", digits))
        else:
            py_reasons.append(text)
    # python loops price then qty over the same 4 checks; order the same way
    order = lambda rs: [r for r in rs]  # noqa: E731
    assert sorted(sql_reasons) == sorted(set(py_reasons))
    assert order(sql_reasons)[0] == "not a JSON object"
