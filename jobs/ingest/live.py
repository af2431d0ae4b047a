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
  price/qty are JSON numbers, read with their exact text). Subscribed with
  ``"snapshot": true``: on every (re)connect Kraken first sends its last 50 trades, so the
  trades missed during a short outage are recovered (those already sent are dropped as
  duplicates). Heartbeats, status and acks are control messages; ``"success": false`` is a
  rejected subscription.
* **coinbase** - Advanced Trade ``wss://advanced-trade-ws.coinbase.com``, subscribe
  ``{"type": "subscribe", "product_ids": [...], "channel": "market_trades"}``; messages
  ``{"channel": "market_trades", "events": [{"type": "snapshot"|"update", "trades": [{"trade_id",
  "product_id", "price", "size", "side": "BUY"|"SELL", "time"}]}]}``. ``side`` is taken as
  reported (lower-cased); Coinbase's docs do not say clearly whether it is the maker or the
  taker side - check before relying on buy/sell volume from Coinbase. The client also
  subscribes to ``heartbeats`` (Coinbase: "most channels close within 60-90 seconds if no
  updates are sent"), so a quiet product keeps its connection. ``type: "error"`` is a
  rejected subscription.

Symbols are normalised to ``BTCUSD`` style (separators removed). Reconnects use
exponential backoff (reset after a good connection) and re-subscribe; Binance's
``serverShutdown`` notice reconnects at once. Per symbol the last trade id is tracked: a
jump logs a gap with the number of missed trades, an id already seen (e.g. a snapshot
replayed after a reconnect) is counted as a duplicate and not sent. Counts (sent,
duplicates, gaps, control messages, ...) are logged every ``stats_every_s`` and at exit,
also on SIGINT/SIGTERM.

Only trade payloads reach the sink: control messages (acks, heartbeats, status, shutdown
notices) are counted, other non-trade messages are counted and logged as ignored, and a
rejected subscription stops the process with :class:`SubscriptionRejected`. A message that
is not JSON, or a trade message with a malformed entry, is handed to the sink as raw text,
so it is dead-lettered with a reason instead of crashing the loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
import time
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


class SubscriptionRejected(RuntimeError):
    """The exchange refused the subscription (unknown symbol, bad channel, ...)."""


class ServerShutdown(Exception):
    """The exchange announced it is about to close this connection: reconnect now."""


class NotATrade(Exception):
    """A well-formed message that is neither a trade nor a known control message."""


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
    control: int = 0  # acks, heartbeats, status, shutdown notices
    ignored: int = 0  # well-formed non-trade messages of an unknown kind
    last_id: dict[str, int] = field(default_factory=dict)

    def summary(self) -> dict[str, int]:
        return {k: v for k, v in vars(self).items() if k != "last_id"}


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
    if not isinstance(msg, dict):
        raise ValueError("not a Binance message object")
    data = msg.get("data", msg)
    if not isinstance(data, dict):
        raise ValueError("Binance 'data' is not an object")
    event = data.get("e")
    if event == "serverShutdown" or msg.get("stream") == "!serverShutdown":
        raise ServerShutdown("Binance serverShutdown: reconnecting")
    if event != "trade":
        if "error" in data or ("code" in data and "msg" in data):
            raise SubscriptionRejected(f"Binance error: {data.get('error') or data.get('msg')}")
        if "result" in data or "id" in data:
            return  # subscription ack
        raise NotATrade(f"Binance event {event!r}")
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
    if msg.get("success") is False:
        raise SubscriptionRejected(f"Kraken {msg.get('method')}: {msg.get('error')}")
    if "method" in msg or msg.get("channel") in ("heartbeat", "status"):
        return  # acks, heartbeats, status
    if msg.get("channel") != "trade":
        raise NotATrade(f"Kraken channel {msg.get('channel')!r}")
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
    if msg.get("type") == "error":
        raise SubscriptionRejected(f"Coinbase error: {msg.get('message')}")
    if msg.get("channel") in ("subscriptions", "heartbeats", "status"):
        return  # acks, heartbeats, status
    if msg.get("channel") != "market_trades":
        raise NotATrade(f"Coinbase channel {msg.get('channel')!r}")
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


def subscribe_messages(exchange: str, symbols: list[str]) -> list[dict[str, Any]]:
    """What to send after (re)connecting: Kraken's trade channel with a snapshot (the
    last trades, which refill a gap), Coinbase's trades and its keep-alive heartbeats."""
    if exchange == "kraken":
        params = {"channel": "trade", "symbol": symbols, "snapshot": True}
        return [{"method": "subscribe", "params": params}]
    if exchange == "coinbase":
        return [
            {"type": "subscribe", "product_ids": symbols, "channel": "market_trades"},
            {"type": "subscribe", "channel": "heartbeats"},
        ]
    return []


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
        except ServerShutdown:
            self.stats.control += 1
            raise
        except NotATrade as e:
            self.stats.ignored += 1
            log.warning("ignored a non-trade message (%s): %.200s", e, raw)
            return
        except (ValueError, TypeError, AttributeError) as e:
            log.warning("unparseable message (%s), dead-lettering it", e)
            self.stats.received += 1
            self._send(raw.decode() if isinstance(raw, bytes) else raw)
            return
        if not trades:
            self.stats.control += 1
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
    stats_every_s: float,
) -> None:
    import websockets

    backoff = backoff_initial_s
    subs = subscribe_messages(exchange, symbols)
    next_stats = time.monotonic() + stats_every_s
    while not stop.is_set():
        try:
            async with websockets.connect(url, open_timeout=10, ping_interval=20) as ws:
                stats.connects += 1
                if stats.connects > 1:
                    stats.reconnects += 1
                    log.info("reconnected to %s (reconnect #%d)", url, stats.reconnects)
                else:
                    log.info("connected to %s", url)
                for sub in subs:
                    await ws.send(json.dumps(sub))
                backoff = backoff_initial_s
                while not stop.is_set():
                    if time.monotonic() >= next_stats:
                        next_stats = time.monotonic() + stats_every_s
                        log.info("live ingest: %s", stats.summary())
                    try:
                        raw = await asyncio.wait_for(ws.recv(), timeout=1.0)
                    except TimeoutError:
                        continue
                    handle(raw)
                    if max_messages is not None and stats.received >= max_messages:
                        return
        except ServerShutdown as e:
            log.info("%s", e)
            backoff = backoff_initial_s
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
    stats_every_s: float = 60.0,
) -> LiveStats:
    """Stream trades until ``max_messages`` trade records were handled, ``stop`` is set, or
    SIGINT/SIGTERM arrives (in the main thread); the counts are logged every
    ``stats_every_s`` and at the end. Raises :class:`SubscriptionRejected` if the exchange
    refuses the subscription."""
    if exchange not in PARSERS:
        raise ValueError(f"unknown exchange {exchange!r}; choose from {sorted(PARSERS)}")
    stats = LiveStats()
    stop = stop or threading.Event()
    previous: dict[signal.Signals, Any] = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, lambda *_: stop.set())
    try:
        asyncio.run(
            _run(
                exchange,
                symbols,
                _Handler(exchange, sink, stats),
                connect_url(exchange, symbols, url),
                stats,
                max_messages,
                stop,
                backoff_initial_s,
                backoff_max_s,
                stats_every_s,
            )
        )
    except SubscriptionRejected as e:
        log.error("subscription rejected, stopping: %s", e)
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("live ingest done: %s", stats.summary())
    return stats
