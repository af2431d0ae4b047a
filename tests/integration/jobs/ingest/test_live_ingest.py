"""Live ingestion against local websocket servers that speak each exchange's real trade
format, with an abrupt disconnect, a replayed overlap, a gap and a garbage message;
trades go through the real broker."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from infra.kafka import read_all
from jobs.ingest.live import run_live
from jobs.ingest.replay import TradeSink
from tests.conftest import make_settings
from tests.integration.jobs.ingest.ws_server import Server

pytestmark = pytest.mark.integration
T0 = 1_700_000_000_000


def trade_msg(exchange: str, tid: int) -> str:
    price, qty, ts = f"{100 + tid}.25", f"0.{tid}", T0 + tid * 1000
    iso = f"2023-11-14T22:13:{20 + tid:02d}.000Z"  # == T0 + tid * 1000
    if exchange == "binance":
        return json.dumps(
            {
                "stream": "btcusdt@trade",
                "data": {
                    "e": "trade",
                    "E": ts,
                    "s": "BTCUSDT",
                    "t": tid,
                    "p": price,
                    "q": qty,
                    "T": ts,
                    "m": tid % 2 == 0,
                },
            }
        )
    if exchange == "kraken":  # numbers, not strings, as Kraken v2 sends them
        side = "sell" if tid % 2 == 0 else "buy"
        return (
            '{"channel":"trade","type":"update","data":[{"symbol":"BTC/USD",'
            f'"side":"{side}","price":{price},"qty":{qty},"ord_type":"market",'
            f'"trade_id":{tid},"timestamp":"{iso}"}}]}}'
        )
    return json.dumps(
        {
            "channel": "market_trades",
            "timestamp": iso,
            "sequence_num": tid,
            "events": [
                {
                    "type": "update",
                    "trades": [
                        {
                            "trade_id": str(tid),
                            "product_id": "BTC-USD",
                            "price": price,
                            "size": qty,
                            "side": "SELL" if tid % 2 == 0 else "BUY",
                            "time": iso,
                        }
                    ],
                }
            ],
        }
    )


def expected(exchange: str, tid: int) -> dict:
    return {
        "ts_ms": T0 + tid * 1000,
        "symbol": "BTCUSDT" if exchange == "binance" else "BTCUSD",
        "price": f"{100 + tid}.25",
        "qty": f"0.{tid}",
        "side": "sell" if tid % 2 == 0 else "buy",
        "trade_id": tid,
        "exchange": exchange,
    }


NOISE = {
    "binance": '{"result":null,"id":1}',
    "kraken": '{"channel":"heartbeat"}',
    "coinbase": '{"channel":"subscriptions","events":[]}',
}


class FakeExchange(Server):
    """Connection 1: trades 1-5 then an abrupt drop. Connection 2: 4, 5 again (overlap),
    6, then 9, 10 (7 and 8 never sent: a gap), noise and one garbage message."""

    def __init__(self, exchange: str):
        super().__init__(self.session)
        self.exchange = exchange
        self.subscriptions: list[dict] = []

    async def session(self, ws, n: int) -> None:
        if self.exchange != "binance":
            self.subscriptions.append(json.loads(await ws.recv()))
        await ws.send(NOISE[self.exchange])
        ids = [1, 2, 3, 4, 5] if n == 1 else [4, 5, 6, 9, 10]
        for tid in ids:
            await ws.send(trade_msg(self.exchange, tid))
        if n == 1:
            await asyncio.sleep(0.2)
            ws.transport.abort()  # no close frame: a real network drop
            return
        await ws.send("{garbage")
        await asyncio.sleep(30)


@pytest.fixture(params=["binance", "kraken", "coinbase"])
def exchange(request) -> Iterator[str]:
    yield request.param


def test_live_ingest_reconnect_gap_duplicates_garbage(exchange, broker, state_dir) -> None:
    s = make_settings(broker, state_dir)
    sink = TradeSink.for_settings(s, detected_by="live")
    with FakeExchange(exchange) as fake:
        stats = run_live(
            exchange,
            ["BTC/USD"]
            if exchange == "kraken"
            else ["BTCUSDT"]
            if exchange == "binance"
            else ["BTC-USD"],
            sink,
            url=f"ws://127.0.0.1:{fake.port}",
            max_messages=11,
            backoff_initial_s=0.1,
        )
    sink.flush()
    assert fake.connections == 2 and stats.reconnects == 1
    if exchange != "binance":  # re-subscribed after the reconnect
        assert len(fake.subscriptions) == 2 and fake.subscriptions[0] == fake.subscriptions[1]
    assert (stats.duplicates, stats.gaps, stats.missed_trades) == (2, 1, 2)
    want = [expected(exchange, i) for i in (1, 2, 3, 4, 5, 6, 9, 10)]
    got = read_all(s.kafka_bootstrap, s.topic_trades, expected=len(want), idle_timeout_s=3)
    assert got == want
    dlq = read_all(s.kafka_bootstrap, s.topic_trades_dlq, expected=1, idle_timeout_s=3)
    assert [(d["payload"], d["reason"], d["detected_by"]) for d in dlq] == [
        ("{garbage", "not a JSON object", "live")
    ]
