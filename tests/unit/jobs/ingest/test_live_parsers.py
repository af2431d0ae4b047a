"""Exchange message parsers on realistic messages (formats of the public trade streams)."""

from __future__ import annotations

import json

import pytest

from jobs.ingest.live import (
    PARSERS,
    LiveStats,
    NotATrade,
    ServerShutdown,
    SubscriptionRejected,
    _Handler,
    connect_url,
    iso_to_ms,
    subscribe_messages,
)
from jobs.ingest.schema import validate


def parse(exchange: str, raw: str) -> list[dict]:
    return list(PARSERS[exchange](json.loads(raw, parse_float=str)))


def test_binance_combined_stream_and_ack() -> None:
    raw = (
        '{"stream":"btcusdt@trade","data":{"e":"trade","E":1672515782136,"s":"BTCUSDT",'
        '"t":12345,"p":"16542.10000000","q":"0.00120000","T":1672515782134,"m":true,"M":true}}'
    )
    [t] = parse("binance", raw)
    assert t == {
        "ts_ms": 1672515782134,
        "symbol": "BTCUSDT",
        "price": "16542.10000000",
        "qty": "0.00120000",
        "side": "sell",
        "trade_id": 12345,
        "exchange": "binance",
    }
    assert validate(t).price == "16542.10000000"
    assert parse("binance", '{"result":null,"id":1}') == []
    with pytest.raises(NotATrade):  # counted and logged, never dead-lettered
        parse("binance", '{"stream":"x","data":{"e":"kline"}}')
    for shutdown in ('{"e":"serverShutdown","E":1}', '{"stream":"!serverShutdown","data":{}}'):
        with pytest.raises(ServerShutdown):  # a clean reconnect, not a dead letter
            parse("binance", shutdown)
    with pytest.raises(SubscriptionRejected, match="Invalid request"):
        parse("binance", '{"error":{"code":2,"msg":"Invalid request"},"id":1}')
    assert subscribe_messages("binance", ["BTCUSDT"]) == []  # streams are in the URL
    assert connect_url("binance", ["BTCUSDT", "ETHUSDT"], None).endswith(
        "/stream?streams=btcusdt@trade/ethusdt@trade"
    )


def test_kraken_v2_snapshot_update_and_noise() -> None:
    raw = (
        '{"channel":"trade","type":"update","data":[{"symbol":"MATIC/USD","side":"sell",'
        '"price":0.5117,"qty":40.0,"ord_type":"market","trade_id":4665906,'
        '"timestamp":"2023-09-25T07:49:37.708706Z"}]}'
    )
    [t] = parse("kraken", raw)
    assert t == {
        "ts_ms": 1695628177708,
        "symbol": "MATICUSD",
        "price": "0.5117",
        "qty": "40.0",
        "side": "sell",
        "trade_id": 4665906,
        "exchange": "kraken",
    }
    assert parse("kraken", '{"channel":"heartbeat"}') == []
    assert (
        parse("kraken", '{"channel":"status","type":"update","data":[{"system":"online"}]}') == []
    )
    assert (
        parse("kraken", '{"method":"subscribe","result":{"channel":"trade"},"success":true}') == []
    )
    assert subscribe_messages("kraken", ["BTC/USD"]) == [
        {
            "method": "subscribe",
            "params": {"channel": "trade", "symbol": ["BTC/USD"], "snapshot": True},
        }
    ]
    rejected = (
        '{"error":"Currency pair not supported BTC/XYZ","method":"subscribe",'
        '"success":false,"symbol":"BTC/XYZ","time_in":"2023-09-25T07:49:37.708706Z"}'
    )
    with pytest.raises(SubscriptionRejected, match="Currency pair not supported"):
        parse("kraken", rejected)
    with pytest.raises(NotATrade):
        parse("kraken", '{"channel":"book","type":"update","data":[]}')


def test_coinbase_market_trades() -> None:
    raw = (
        '{"channel":"market_trades","client_id":"","timestamp":"2023-02-09T20:19:35.39625135Z",'
        '"sequence_num":0,"events":[{"type":"snapshot","trades":[{"trade_id":"000000001",'
        '"product_id":"ETH-USD","price":"1260.01","size":"0.3","side":"BUY",'
        '"time":"2019-08-14T20:42:27.265Z"},{"trade_id":"000000000","product_id":"ETH-USD",'
        '"price":"1260.00","size":"0.1","side":"SELL","time":"2019-08-14T20:42:27.1Z"}]}]}'
    )
    ts = parse("coinbase", raw)
    assert [t["trade_id"] for t in ts] == [1, 0]
    assert ts[0] == {
        "ts_ms": 1565815347265,
        "symbol": "ETHUSD",
        "price": "1260.01",
        "qty": "0.3",
        "side": "buy",
        "trade_id": 1,
        "exchange": "coinbase",
    }
    assert ts[1]["ts_ms"] == 1565815347100
    assert parse("coinbase", '{"channel":"subscriptions","events":[]}') == []
    heartbeat = (
        '{"channel":"heartbeats","client_id":"","timestamp":"2023-06-23T20:31:26.122969572Z",'
        '"sequence_num":0,"events":[{"current_time":"2023-06-23 20:31:56.121961769 +0000 UTC '
        'm=+91717.525857105","heartbeat_counter":3049}]}'
    )
    assert parse("coinbase", heartbeat) == []
    with pytest.raises(SubscriptionRejected, match="Failure to subscribe"):
        parse("coinbase", '{"type":"error","message":"Failure to subscribe"}')
    assert subscribe_messages("coinbase", ["BTC-USD"]) == [
        {"type": "subscribe", "product_ids": ["BTC-USD"], "channel": "market_trades"},
        {"type": "subscribe", "channel": "heartbeats"},
    ]


def test_iso_to_ms() -> None:
    assert iso_to_ms("2024-01-01T00:00:00Z") == 1704067200000
    assert iso_to_ms("2024-01-01T00:00:00.5Z") == 1704067200500
    assert iso_to_ms("garbage") == "garbage"


class ListSink:
    def __init__(self) -> None:
        self.sent: list = []
        self.dead: list = []

    def send(self, raw):  # same contract as TradeSink.send: a Trade or None
        from jobs.ingest.schema import InvalidTrade

        try:
            t = validate(raw)
        except InvalidTrade as e:
            self.dead.append(e.reason)
            return None
        self.sent.append(t)
        return t


def test_handler_gaps_duplicates_and_garbage() -> None:
    sink, stats = ListSink(), LiveStats()
    h = _Handler("binance", sink, stats)

    def msg(tid: int) -> str:
        return json.dumps(
            {
                "stream": "btcusdt@trade",
                "data": {
                    "e": "trade",
                    "s": "BTCUSDT",
                    "t": tid,
                    "p": "100.5",
                    "q": "1",
                    "T": 1700000000000 + tid,
                    "m": False,
                },
            }
        )

    for tid in (1, 2, 3, 2, 3, 7, 8):
        h(msg(tid))
    h("not json at all")
    h(
        json.dumps(
            {
                "data": {
                    "e": "trade",
                    "s": "BTCUSDT",
                    "t": 9,
                    "p": "abc",
                    "q": "1",
                    "T": 1700000000009,
                    "m": False,
                }
            }
        )
    )
    h('{"result":null,"id":1}')  # an ack: control, not a dead letter
    h('{"stream":"btcusdt@kline_1m","data":{"e":"kline"}}')  # not ours: ignored
    assert [t.trade_id for t in sink.sent] == [1, 2, 3, 7, 8]
    assert (stats.duplicates, stats.gaps, stats.missed_trades) == (2, 1, 3)
    assert sink.dead == ["not a JSON object", "price is not numeric"]
    assert stats.dead_lettered == 2 and stats.received == 9
    assert (stats.control, stats.ignored) == (1, 1)
