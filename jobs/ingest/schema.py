"""The trade message and its validation rules.

Wire format on topic ``trades`` (key = symbol), JSON::

    {"ts_ms": 1680652700452, "symbol": "BTCUSDT.UM", "price": "28145.1", "qty": "0.002",
     "side": "buy", "trade_id": 3535186032, "exchange": "binance"}

``price``/``qty`` are decimal strings (as Binance sends them) so nothing is lost to binary
floating point; JSON numbers are accepted too. ``side`` is the aggressor side.
The rules and reason texts below are the same, in the same order, as the ``CASE`` in
``sql/flink/candles.sql`` (a unit test keeps them in step), so a bad record gets the same
reason whether ingestion or the Flink job catches it.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from infra.connectors import SYMBOL_REGEX

TS_MIN_MS = 1_262_304_000_000  # 2010-01-01
TS_MAX_MS = 4_102_444_799_999  # 2099-12-31
_SYMBOL = re.compile(SYMBOL_REGEX)
_INT = re.compile(r"^[+-]?\d+$")
_EIGHT_DP = Decimal("1e-8")  # DECIMAL(20,8) price / DECIMAL(18,8) qty in the Flink job
_WIDE_LIMIT = Decimal(10) ** 20  # DECIMAL(38,18) parse limit in the Flink job


@dataclass(frozen=True, slots=True)
class Trade:
    ts_ms: int
    symbol: str
    price: str
    qty: str
    side: str
    trade_id: int
    exchange: str = "binance"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class InvalidTrade(ValueError):
    def __init__(self, reason: str, payload: str):
        super().__init__(reason)
        self.reason = reason
        self.payload = payload


def _text(v: Any) -> str | None:
    """What Flink's JSON_VALUE returns for a scalar: its text; None for null/object/array."""
    if v is None or isinstance(v, dict | list):
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _decimal(text: str) -> Decimal | None:
    try:
        d = Decimal(text.strip())
    except InvalidOperation:
        return None
    return d if d.is_finite() else None


def _int(text: str) -> int | None:
    return int(text) if _INT.match(text.strip()) else None


def validate(raw: str | bytes | dict[str, Any]) -> Trade:
    """Return a normalised :class:`Trade` or raise :class:`InvalidTrade` with a reason."""
    if isinstance(raw, dict):
        obj: Any = raw
        payload = json.dumps(raw, default=str)
    else:
        payload = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        try:
            obj = json.loads(payload)
        except (ValueError, TypeError):
            obj = None
    if not isinstance(obj, dict):
        raise InvalidTrade("not a JSON object", payload)

    def bad(reason: str) -> InvalidTrade:
        return InvalidTrade(reason, payload)

    ts_text = _text(obj.get("ts_ms"))
    if ts_text is None:
        raise bad("missing field ts_ms")
    ts_ms = _int(ts_text)
    if ts_ms is None:
        raise bad("ts_ms is not an integer")
    if not TS_MIN_MS <= ts_ms <= TS_MAX_MS:
        raise bad("ts_ms out of range")
    symbol = _text(obj.get("symbol"))
    if symbol is None:
        raise bad("missing field symbol")
    if not _SYMBOL.match(symbol):
        raise bad("unknown symbol format")
    out: dict[str, str] = {}
    for name, int_digits in (("price", 12), ("qty", 10)):
        text = _text(obj.get(name))
        if text is None:
            raise bad(f"missing field {name}")
        value = _decimal(text)
        if value is None or abs(value) >= _WIDE_LIMIT:
            raise bad(f"{name} is not numeric")
        if value <= 0:
            raise bad(f"{name} must be > 0")
        if value >= Decimal(10) ** int_digits or value != value.quantize(_EIGHT_DP):
            raise bad(f"{name} needs more than 8 decimals or {int_digits} digits")
        out[name] = text.strip()
    side = _text(obj.get("side"))
    if side is None:
        raise bad("missing field side")
    if side not in ("buy", "sell"):
        raise bad("side must be buy or sell")
    tid_text = _text(obj.get("trade_id"))
    if tid_text is None:
        raise bad("missing field trade_id")
    trade_id = _int(tid_text)
    if trade_id is None or trade_id < 0:
        raise bad("trade_id is not a non-negative integer")
    exchange = _text(obj.get("exchange")) or "unknown"
    return Trade(ts_ms, symbol, out["price"], out["qty"], side, trade_id, exchange)


def dlq_record(reason: str, payload: str, source: str, detected_by: str) -> dict[str, Any]:
    """Same shape as the Flink job's ``trades_dlq_sink`` rows."""
    import datetime as dt

    return {
        "reason": reason,
        "payload": payload,
        "source_topic": source,
        "source_partition": None,
        "source_offset": None,
        "detected_by": detected_by,
        "detected_at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
    }


def format_decimal(x: float) -> str:
    """Shortest plain (non-scientific) text that round-trips the float, e.g. '0.00001'."""
    import numpy as np

    return str(np.format_float_positional(float(x), trim="-"))
