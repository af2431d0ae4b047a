"""Live trades from exchange websockets -> the ``trades`` topic (via :class:`TradeSink`).

Supported public trade streams and their real message formats:

* **binance** - combined streams ``/stream?streams=btcusdt@trade/...``; each message is
  ``{"stream": "...", "data": {"e": "trade", "s": "BTCUSDT", "t": id, "p": "price",
  "q": "qty", "T": trade_time_ms, "m": buyer_is_maker}}``. ``m=true`` means the seller was
  the aggressor, so ``side = "sell"``.
* **kraken** - WebSocket v2 ``wss://ws.kraken.com/v2``, subscribe
  ``{"method": "subscribe", "params": {"channel": "trade", "symbol": ["BTC/USD"]}}``;
  trades arrive as ``{"channel": "trade", "type": "snapshot"|"update", "data": [{"symbol",
  "side", "price", "qty", "ord_type", "trade_id", "timestamp"}]}`` (``side`` = taker side;
  price/qty are JSON numbers, read with their exact text). Heartbeats, status and acks are
  ignored.
* **coinbase** - Advanced Trade ``wss://advanced-trade-ws.coinbase.com``, subscribe
  ``{"type": "subscribe", "product_ids": [...], "channel": "market_trades"}``; messages
  ``{"channel": "market_trades", "events": [{"type": "snapshot"|"update", "trades": [{"trade_id",
  "product_id", "price", "size", "side": "BUY"|"SELL", "time"}]}]}``. ``side`` is taken as
  reported (lower-cased); Coinbase's docs do not say clearly whether it is the maker or the
  taker side - check before relying on buy/sell volume from Coinbase.

Symbols are normalised to ``BTCUSD`` style (separators removed). Reconnects use
exponential backoff (reset after a good connection) and re-subscribe. Per symbol the last
trade id is tracked: a jump logs a gap with the number of missed trades, an id already
seen (e.g. a snapshot replayed after a reconnect) is counted as a duplicate and not sent.
Messages that cannot be understood are handed to the sink as raw text, so they are
dead-lettered with a reason instead of crashing the loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

log = logging.getLogger(__name__)

DEFAULT_URLS = {
    "binance": "wss://stream.binance.com:9443/stream",
    "kraken": "wss://ws.kraken.com/v2",
    "coinbase": "wss://advanced-trade-ws.coinbase.com",
}


class Sink(Protocol):
    def send(self, raw: Any) -> object: ...


@dataclass
class LiveStats:
    received: int = 0  # trade records seen (incl. duplicates and bad ones)
    sent: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    gaps: int = 0
    missed_trades: int = 0
    connects: int = 0
    reconnects: int = 0
    last_id: dict[str, int] = field(default_factory=dict)


def normalise_symbol(sym: Any) -> Any:
    return sym.replace("/", "").replace("-", "").upper() if isinstance(sym, str) else sym


def iso_to_ms(text: Any) -> Any:
    """'2023-09-25T07:49:37.708706Z' (any fraction length) -> epoch ms; passthrough if odd."""
    if not isinstance(text, str):
        return text
    try:
        head, _, frac = text.rstrip("Z").partition(".")
        base = datetime.fromisoformat(head + "+00:00")
    except ValueError:
        return text
    return int(base.timestamp()) * 1000 + int((frac + "000")[:3] or 0)


def _text(v: Any) -> Any:
    """Exact decimal text of a value parsed with parse_float=str (ints -> str too)."""
    return str(v) if isinstance(v, int | str) and not isinstance(v, bool) else v


def _int(v: Any) -> Any:
    if isinstance(v, str) and v.isdigit():
        return int(v)
    return v


# ----------------------------------------------------------------------------- parsers
# Each parser takes the decoded message and yields wire-format trade dicts. Non-trade
# messages yield nothing. A trade with missing fields still yields a dict (with None),
# which the sink's validation dead-letters with a reason.


def parse_binance(msg: Any) -> Iterator[dict[str, Any]]:
    data = msg.get("data", msg) if isinstance(msg, dict) else None
    if not isinstance(data, dict) or data.get("e") != "trade":
        if isinstance(data, dict) and ("result" in data or "id" in data):
            return  # subscription ack
        raise ValueError("not a Binance trade event")
    m = data.get("m")
    yield {
        "ts_ms": data.get("T"),
        "symbol": normalise_symbol(data.get("s")),
        "price": _text(data.get("p")),
        "qty": _text(data.get("q")),
        "side": ("sell" if m else "buy") if isinstance(m, bool) else None,
        "trade_id": data.get("t"),
        "exchange": "binance",
    }


def parse_kraken(msg: Any) -> Iterator[dict[str, Any]]:
    if not isinstance(msg, dict):
        raise ValueError("not a Kraken message object")
    if msg.get("channel") != "trade" or "method" in msg:
        return  # heartbeat, status, subscribe ack
    for t in msg.get("data") or []:
        if not isinstance(t, dict):
            raise ValueError("Kraken trade entry is not an object")
        yield {
            "ts_ms": iso_to_ms(t.get("timestamp")),
            "symbol": normalise_symbol(t.get("symbol")),
            "price": _text(t.get("price")),
            "qty": _text(t.get("qty")),
            "side": t.get("side"),
            "trade_id": t.get("trade_id"),
            "exchange": "kraken",
        }


def parse_coinbase(msg: Any) -> Iterator[dict[str, Any]]:
    if not isinstance(msg, dict):
        raise ValueError("not a Coinbase message object")
    if msg.get("channel") != "market_trades":
        return  # subscriptions, heartbeats
    for ev in msg.get("events") or []:
        for t in (ev or {}).get("trades") or []:
            side = t.get("side")
            yield {
                "ts_ms": iso_to_ms(t.get("time")),
                "symbol": normalise_symbol(t.get("product_id")),
                "price": _text(t.get("price")),
                "qty": _text(t.get("size")),
                "side": side.lower() if isinstance(side, str) else side,
                "trade_id": _int(t.get("trade_id")),
                "exchange": "coinbase",
            }


PARSERS: dict[str, Callable[[Any], Iterator[dict[str, Any]]]] = {
    "binance": parse_binance,
    "kraken": parse_kraken,
    "coinbase": parse_coinbase,
}


def connect_url(exchange: str, symbols: list[str], url: str | None) -> str:
    base = url or DEFAULT_URLS[exchange]
    if exchange == "binance" and "streams=" not in base:
        streams = "/".join(f"{s.replace('/', '').lower()}@trade" for s in symbols)
        sep = "&" if "?" in base else "?"
        return f"{base}{sep}streams={streams}"
    return base


def subscribe_message(exchange: str, symbols: list[str]) -> dict[str, Any] | None:
    if exchange == "kraken":
        return {"method": "subscribe", "params": {"channel": "trade", "symbol": symbols}}
    if exchange == "coinbase":
        return {"type": "subscribe", "product_ids": symbols, "channel": "market_trades"}
    return None


# ------------------------------------------------------------------------------ runner
class _Handler:
    def __init__(self, exchange: str, sink: Sink, stats: LiveStats):
        self.parse = PARSERS[exchange]
        self.sink = sink
        self.stats = stats

    def __call__(self, raw: str | bytes) -> None:
        try:
            msg = json.loads(raw, parse_float=str)  # keep decimal text exact
            trades = sorted(self.parse(msg), key=_order)
        except (ValueError, TypeError, AttributeError) as e:
            log.warning("unparseable message (%s), dead-lettering it", e)
            self.stats.received += 1
            self._send(raw.decode() if isinstance(raw, bytes) else raw)
            return
        for t in trades:
            self.stats.received += 1
            sym, tid = t.get("symbol"), t.get("trade_id")
            if isinstance(sym, str) and isinstance(tid, int):
                last = self.stats.last_id.get(sym)
                if last is not None and tid <= last:
                    self.stats.duplicates += 1
                    continue
                if last is not None and tid > last + 1:
                    self.stats.gaps += 1
                    self.stats.missed_trades += tid - last - 1
                    log.warning(
                        "gap: %s missed %d trades (last %d, got %d)", sym, tid - last - 1, last, tid
                    )
            if self._send(t) and isinstance(sym, str) and isinstance(tid, int):
                self.stats.last_id[sym] = tid

    def _send(self, raw: Any) -> bool:
        ok = self.sink.send(raw) is not None
        if ok:
            self.stats.sent += 1
        else:
            self.stats.dead_lettered += 1
        return ok


def _order(t: dict[str, Any]) -> tuple[int, int]:
    tid = t.get("trade_id")
    return (0, tid) if isinstance(tid, int) else (1, 0)


async def _run(
    exchange: str,
    symbols: list[str],
    handle: _Handler,
    url: str,
    stats: LiveStats,
    max_messages: int | None,
    stop: threading.Event,
    backoff_initial_s: float,
    backoff_max_s: float,
) -> None:
    import websockets

    backoff = backoff_initial_s
    sub = subscribe_message(exchange, symbols)
    while not stop.is_set():
        try:
            async with websockets.connect(url, open_timeout=10, ping_interval=20) as ws:
                stats.connects += 1
                if stats.connects > 1:
                    stats.reconnects += 1
                    log.info("reconnected to %s (reconnect #%d)", url, stats.reconnects)
                else:
                    log.info("connected to %s", url)
                if sub is not None:
                    await ws.send(json.dumps(sub))
                backoff = backoff_initial_s
                while not stop.is_set():
                    try:
                        raw = await asyncio.wait_for(ws.recv(), timeout=1.0)
                    except TimeoutError:
                        continue
                    handle(raw)
                    if max_messages is not None and stats.received >= max_messages:
                        return
        except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as e:
            if stop.is_set():
                return
            log.warning("disconnected from %s (%s); retrying in %.1fs", url, e, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, backoff_max_s)


def run_live(
    exchange: str,
    symbols: list[str],
    sink: Sink,
    *,
    url: str | None = None,
    max_messages: int | None = None,
    stop: threading.Event | None = None,
    backoff_initial_s: float = 0.5,
    backoff_max_s: float = 30.0,
) -> LiveStats:
    """Stream trades until ``max_messages`` trade records were handled or ``stop`` is set."""
    if exchange not in PARSERS:
        raise ValueError(f"unknown exchange {exchange!r}; choose from {sorted(PARSERS)}")
    stats = LiveStats()
    asyncio.run(
        _run(
            exchange,
            symbols,
            _Handler(exchange, sink, stats),
            connect_url(exchange, symbols, url),
            stats,
            max_messages,
            stop or threading.Event(),
            backoff_initial_s,
            backoff_max_s,
        )
    )
    log.info("live ingest done: %s", {k: v for k, v in vars(stats).items() if k != "last_id"})
    return stats
