"""The trade message and its validation (the ingestion side of the DLQ contract).

The fields, rules and reason texts are defined once, in :mod:`udfs.trade_contract`; the
candles job applies the same table (``TRADE_CHECK``,
udfs/java/candleflow/TradeCheck.java), so a bad record gets the same verdict and reason
whether ingestion or the Flink job catches it (proved by the corpus test
``tests/integration/jobs/flink/test_trade_contract.py``). ``price``/``qty`` travel as decimal text,
unchanged, so nothing is lost to binary floating point; ``side`` is the aggressor side.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from udfs.trade_contract import (
    NOT_A_JSON_OBJECT,
    OPTIONAL,
    TS_MAX_MS,
    TS_MIN_MS,
    as_int,
    check,
    parse_object,
    scalar_texts,
)

__all__ = ["TS_MAX_MS", "TS_MIN_MS", "InvalidTrade", "Trade", "dlq_record", "validate"]
DEFAULT_MAX_FUTURE_MS = 60_000  # Settings.trade_max_future_ms


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


def validate(
    raw: str | bytes | Mapping[str, Any] | None,
    *,
    now_ms: int | None = None,
    max_future_ms: int = DEFAULT_MAX_FUTURE_MS,
) -> Trade:
    """Return a normalised :class:`Trade` or raise :class:`InvalidTrade` with a reason.

    ``raw``: the message text (bytes are decoded as UTF-8, bad bytes replaced, as the job's
    raw format does) or a mapping of field -> value (field texts, ints, None for absent),
    checked as the JSON it would be sent as. ``now_ms``: the wall clock (default now), in
    whole seconds like the job; a trade stamped more than ``max_future_ms`` after it is
    rejected ("ts_ms in the future").
    """
    if isinstance(raw, Mapping):
        payload = json.dumps(dict(raw), default=str, ensure_ascii=False)
    elif isinstance(raw, bytes):
        payload = raw.decode("utf-8", "replace")
    else:
        payload = raw  # type: ignore[assignment]
    obj = parse_object(payload)
    if obj is None:
        raise InvalidTrade(NOT_A_JSON_OBJECT, "" if payload is None else payload)
    texts = scalar_texts(obj)
    now_s = (int(time.time() * 1000) if now_ms is None else now_ms) // 1000
    reason = check(texts, now_s, max_future_ms)
    if reason is not None:
        raise InvalidTrade(reason, payload)
    return Trade(
        ts_ms=int(as_int(texts["ts_ms"]) or 0),
        symbol=str(texts["symbol"]),
        price=str(texts["price"]),
        qty=str(texts["qty"]),
        side=str(texts["side"]),
        trade_id=int(as_int(texts["trade_id"]) or 0),
        exchange=str(texts["exchange"] or OPTIONAL["exchange"]),
    )


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
