"""Live ingestion's control plane against local websocket servers that behave as the
exchanges document: Kraken's snapshot refills a gap, rejected subscriptions stop the
process with an error, Binance's serverShutdown reconnects cleanly, a quiet Coinbase product
stays connected through heartbeats, and SIGINT ends with the counts logged."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import threading
import time
from typing import Any

import pytest

from infra.kafka import read_all
from jobs.ingest.live import SubscriptionRejected, run_live
from jobs.ingest.replay import TradeSink
from tests.conftest import make_settings
from tests.integration.jobs.ingest.test_live_ingest import expected, trade_msg
from tests.integration.jobs.ingest.ws_server import Server

pytestmark = pytest.mark.integration


def kraken_trades(kind: str, ids: list[int]) -> str:
    """One Kraken v2 trade message holding ``ids`` (a snapshot carries many)."""
    entries = [json.loads(trade_msg("kraken", i))["data"][0] for i in ids]
    msg = {"channel": "trade", "type": kind, "data": entries}
    return json.dumps(msg)


def test_kraken_snapshot_on_reconnect_refills_the_gap(broker, state_dir) -> None:
    """Connection 1: trades 1-5, then a drop while trades 6-8 happen. Connection 2: Kraken's
    snapshot (subscribed with snapshot=true) of its last trades 3-8, then 9 and 10. Every
    trade arrives once, nothing is reported missing."""
    subs: list[dict[str, Any]] = []

    async def kraken(ws: Any, n: int) -> None:
        subs.append(json.loads(await ws.recv()))
        await ws.send('{"method":"subscribe","result":{"channel":"trade"},"success":true}')
        if n == 1:
            for i in range(1, 6):
                await ws.send(trade_msg("kraken", i))
            await asyncio.sleep(0.2)
            ws.transport.abort()
            return
        if subs[-1]["params"].get("snapshot"):
            await ws.send(kraken_trades("snapshot", [3, 4, 5, 6, 7, 8]))
        for i in (9, 10):
            await ws.send(trade_msg("kraken", i))
        await asyncio.sleep(30)

    s = make_settings(broker, state_dir)
    sink = TradeSink.for_settings(s, detected_by="live")
    with Server(kraken) as fake:
        stats = run_live(
            "kraken", ["BTC/USD"], sink, url=fake.url, max_messages=13, backoff_initial_s=0.1
        )
    sink.flush()
    assert stats.reconnects == 1 and all(sub["params"]["snapshot"] for sub in subs)
    assert (stats.gaps, stats.missed_trades, stats.duplicates) == (0, 0, 3)
    want = [expected("kraken", i) for i in range(1, 11)]
    got = read_all(s.kafka_bootstrap, s.topic_trades, expected=len(want), idle_timeout_s=3)
    assert got == want


@pytest.mark.parametrize(
    ("exchange", "symbols", "answer", "message"),
    [
        (
            "kraken",
            ["BTC/XYZ"],
            '{"error":"Currency pair not supported BTC/XYZ","method":"subscribe",'
            '"success":false,"symbol":"BTC/XYZ"}',
            "Currency pair not supported",
        ),
        (
            "coinbase",
            ["NOPE-USD"],
            '{"type":"error","message":"Failure to subscribe"}',
            "Failure to subscribe",
        ),
    ],
)
def test_rejected_subscription_is_an_error(
    exchange: str,
    symbols: list[str],
    answer: str,
    message: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def refuse(ws: Any, n: int) -> None:
        await ws.recv()
        await ws.send(answer)
        await asyncio.sleep(30)

    class Nowhere:
        def send(self, raw: Any) -> object:
            raise AssertionError(f"nothing may reach the sink: {raw!r}")

    with Server(refuse) as fake, caplog.at_level(logging.INFO, "jobs.ingest.live"):
        t0 = time.monotonic()
        with pytest.raises(SubscriptionRejected, match=message):
            run_live(exchange, symbols, Nowhere(), url=fake.url, backoff_initial_s=0.1)
        assert time.monotonic() - t0 < 10 and fake.connections == 1  # no silent retry loop
    assert any("subscription rejected" in r.message for r in caplog.records)
    assert any("live ingest done" in r.message for r in caplog.records)


def test_binance_server_shutdown_reconnects_without_dead_letters(broker, state_dir) -> None:
    async def binance(ws: Any, n: int) -> None:
        for i in (1, 2) if n == 1 else (3, 4):
            await ws.send(trade_msg("binance", i))
        if n == 1:  # the notice comes before Binance closes; the client must not wait
            await ws.send('{"e":"serverShutdown","E":1700000000000}')
        await asyncio.sleep(30)

    s = make_settings(broker, state_dir)
    sink = TradeSink.for_settings(s, detected_by="live")
    with Server(binance) as fake:
        t0 = time.monotonic()
        stats = run_live("binance", ["BTCUSDT"], sink, url=fake.url, max_messages=4)
        assert time.monotonic() - t0 < 15
    sink.flush()
    assert (stats.connects, stats.dead_lettered, stats.control) == (2, 0, 1)
    got = read_all(s.kafka_bootstrap, s.topic_trades, expected=4, idle_timeout_s=3)
    assert got == [expected("binance", i) for i in (1, 2, 3, 4)]
    assert read_all(s.kafka_bootstrap, s.topic_trades_dlq, idle_timeout_s=2) == []


def test_quiet_coinbase_product_stays_connected_past_120_s() -> None:
    """As Coinbase documents, a channel without updates closes within 60-90 s unless the
    client subscribes to heartbeats: this server closes a connection after 60 s without a
    message, and sends a heartbeat every second to clients subscribed to them. A product
    with no trade at all for 125 s keeps its first connection."""
    channels: list[str] = []

    async def coinbase(ws: Any, n: int) -> None:
        await ws.send('{"channel":"subscriptions","events":[]}')
        beat, last = False, time.monotonic()
        counter = 0
        while time.monotonic() - last < 60:
            try:
                sub = json.loads(await asyncio.wait_for(ws.recv(), timeout=1.0))
                channels.append(sub.get("channel"))
                beat = beat or sub.get("channel") == "heartbeats"
            except TimeoutError:
                pass
            if beat:
                counter += 1
                hb = {"channel": "heartbeats", "events": [{"heartbeat_counter": counter}]}
                await ws.send(json.dumps(hb))
                last = time.monotonic()
        await ws.close()

    stop = threading.Event()

    class Nowhere:
        def send(self, raw: Any) -> object:
            raise AssertionError(f"no trade was sent: {raw!r}")

    with Server(coinbase) as fake:
        timer = threading.Timer(125, stop.set)
        timer.start()
        try:
            stats = run_live("coinbase", ["BTC-USD"], Nowhere(), url=fake.url, stop=stop)
        finally:
            timer.cancel()
    assert set(channels) == {"market_trades", "heartbeats"}
    assert (stats.connects, stats.reconnects) == (1, 0)
    assert stats.control >= 100  # ~1 heartbeat a second


def test_sigint_ends_with_the_counts_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def binance(ws: Any, n: int) -> None:
        for i in (1, 2, 2):
            await ws.send(trade_msg("binance", i))
        await asyncio.sleep(30)

    class Keep:
        def __init__(self) -> None:
            self.sent: list[Any] = []

        def send(self, raw: Any) -> object:
            self.sent.append(raw)
            return raw

    sink = Keep()
    with Server(binance) as fake, caplog.at_level(logging.INFO, "jobs.ingest.live"):
        threading.Timer(2.0, os.kill, (os.getpid(), signal.SIGINT)).start()
        stats = run_live("binance", ["BTCUSDT"], sink, url=fake.url)
    assert (stats.sent, stats.duplicates) == (2, 1)
    done = [r.message for r in caplog.records if "live ingest done" in r.message]
    assert done and "'duplicates': 1" in done[0] and "'gaps': 0" in done[0]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
