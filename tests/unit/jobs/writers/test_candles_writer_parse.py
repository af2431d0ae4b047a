"""`candles` messages -> ClickHouse rows, and the reasons malformed ones are dead-lettered with."""

from __future__ import annotations

import json

import pytest

from jobs.writers.candles import FIELDS, parse_candle_message
from jobs.writers.validation import InvalidMessage

# a real message of the candles job (sql/flink/candles.sql): decimals as JSON numbers,
# emitted_at as Flink's ISO-8601 text
GOOD = {
    "symbol": "BTCUSDT.UM",
    "timeframe": "1m",
    "window_start_ms": 1680652680000,
    "window_end_ms": 1680652740000,
    "open": 28145.1,
    "high": 28150.0,
    "low": 28140.2,
    "close": 28149.9,
    "volume": 12.345,
    "quote_volume": 347469.1,
    "vwap": 28146.3,
    "trade_count": 321,
    "buy_volume": 6.1,
    "sell_volume": 6.245,
    "first_trade_id": 3535186032,
    "last_trade_id": 3535186352,
    "emitted_at": "2023-04-05T00:00:05.123Z",
}


def test_good_message_becomes_the_table_row() -> None:
    row = parse_candle_message(json.dumps({**GOOD, "extra": 1}).encode())
    assert list(row) == list(FIELDS)  # the table's columns, in order; extras dropped
    assert row["emitted_at"] == 1680652805123
    assert row["open"] == 28145.1 and isinstance(row["trade_count"], int)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"", "empty message"),
        (b"{nope", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (
            json.dumps({k: v for k, v in GOOD.items() if k != "vwap"}).encode(),
            "missing fields: vwap",
        ),
        (json.dumps({**GOOD, "symbol": ""}).encode(), "symbol: expected a non-empty string"),
        (json.dumps({**GOOD, "trade_count": "3"}).encode(), "trade_count: expected an integer"),
        (json.dumps({**GOOD, "close": None}).encode(), "close: expected a finite number"),
        (
            json.dumps({**GOOD, "window_end_ms": GOOD["window_start_ms"]}).encode(),
            "window_end_ms <= window_start_ms",
        ),
        (json.dumps({**GOOD, "emitted_at": "yesterday"}).encode(), "emitted_at: not an ISO-8601"),
    ],
)
def test_malformed_messages_have_a_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(InvalidMessage) as e:
        parse_candle_message(payload)
    assert e.value.reason.startswith(reason)
