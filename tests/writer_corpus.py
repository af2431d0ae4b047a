"""The writers' adversarial corpus (tests/data/writer_corpus/<topic>.jsonl, format in
tests/data/README.md "Writers"): loading it, and the oracle for its ``ok`` rows.

Shared by the unit tests (every line through the parse functions) and the integration
tests (every line through the real writers onto real stores)."""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

CORPUS_DIR = Path(__file__).parent / "data" / "writer_corpus"
TOPICS = ("candles", "features", "predictions", "orders", "fills", "equity")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Case:
    topic: str
    line: int
    case: str
    raw: bytes | None
    expect: str  # ok | dlq
    reason: str | None
    stored: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.topic}:{self.line}:{self.case}"


def load(topic: str) -> list[Case]:
    out = []
    with (CORPUS_DIR / f"{topic}.jsonl").open(encoding="utf-8") as f:
        for n, text in enumerate(f, 1):
            d = json.loads(text)
            if "payload_b64" in d:
                raw: bytes | None = base64.b64decode(d["payload_b64"])
            else:
                raw = None if d["payload"] is None else d["payload"].encode("utf-8")
            out.append(Case(topic, n, d["case"], raw, d["expect"], d.get("reason"),
                            d.get("stored", {})))  # fmt: skip
    return out


def iso_ms(text: str) -> int:
    """ISO-8601 text -> epoch ms (naive = UTC), independent of infra.clickhouse."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // timedelta(milliseconds=1)


# the fields stored per topic that are ISO text in the message and epoch ms in ClickHouse
ISO_FIELDS = {"candles": ("emitted_at",), "features": ("event_time", "computed_at")}
# fields whose JSON integers are stored as Float64 (everything numeric but these ints)
INT_FIELDS = {
    "candles": {"window_start_ms", "window_end_ms", "trade_count", "first_trade_id",
                "last_trade_id", "emitted_at"},
    "features": {"window_start_ms", "window_end_ms", "trade_count", "event_time",
                 "computed_at"},
    "predictions": {"bar_end_ms", "predicted_at_ms"},
    "orders": {"bar_end_ms"},
    "fills": {"bar_end_ms"},
    "equity": {"bar_end_ms", "degraded"},
}  # fmt: skip


def expected_row(topic: str, case: Case, columns: list[str]) -> dict[str, Any]:
    """An ``ok`` case's ClickHouse row from its message, by the documented rules (not by
    the parse functions): the table's columns, ISO text -> epoch ms, JSON integers in float
    columns -> float, integral floats in int columns -> int, booleans -> 0/1, a null
    ``model_tag`` -> ''; then the case's ``stored`` values on top."""
    assert case.raw is not None
    msg = json.loads(case.raw)
    row: dict[str, Any] = {}
    for col in columns:
        v = msg[col]
        if col in ISO_FIELDS.get(topic, ()) and isinstance(v, str):
            v = iso_ms(v)
        elif isinstance(v, bool) or (col in INT_FIELDS[topic] and isinstance(v, float)):
            v = int(v)
        elif isinstance(v, int) and col not in INT_FIELDS[topic]:
            v = float(v)
        if col == "model_tag" and v is None:
            v = ""
        row[col] = v
    for k, v in case.stored.items():
        row[k] = int(v) if isinstance(v, bool) else v
    return row


def same(a: Any, b: Any) -> bool:
    """Equal, floats by value and sign (NaN == NaN)."""
    if isinstance(a, float) and isinstance(b, float):
        if math.isnan(a) or math.isnan(b):
            return math.isnan(a) and math.isnan(b)
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b) and type(a) is type(b)
