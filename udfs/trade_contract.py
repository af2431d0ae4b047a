"""The trade message contract: one table of rules, checked in Python and in the Flink job.

Wire format on topic ``trades`` (key = symbol), one JSON object per message::

    {"ts_ms": 1680652700452, "symbol": "BTCUSDT.UM", "price": "28145.1", "qty": "0.002",
     "side": "buy", "trade_id": 3535186032, "exchange": "binance"}

Every rule looks at a field's *text* as Flink's ``JSON_VALUE`` returns it: a JSON string's
value; a JSON number's text as ``java.math.BigDecimal`` prints it (``1e2`` -> ``1E+2``,
``-0`` -> ``0``); ``true``/``false``; nothing (None) for null, a missing key, an array or an
object. The rules are ASCII regular expressions that mean the same in Python's ``re`` and
Java's ``Pattern`` (anchored with ``\\A`` and ``(?![\\s\\S])``: ``$`` would also match before
a trailing newline), integer ranges, and the wall-clock bound. :data:`RULES` is the only
definition: :func:`check` applies it to a parsed message; the candles job
(``sql/flink/candles.sql``) gets it as JSON (:func:`contract_json`) and applies it with
``TRADE_CHECK`` (``udfs/java/candleflow/TradeCheck.java``, one parse and one pass over the
rules per record; its texts are what ``JSON_VALUE`` would return), and a corpus test
(``tests/data/trades_corpus.jsonl``) sends the same payloads through both and asserts the
same verdict and reason case by case. The first failing rule gives the reason.

:func:`scalar_texts` parses a payload the way the job's JSON functions (Jackson) do, so the
two sides agree on what a field's text is: no NaN/Infinity literals, no leading zeros, at
most 1000 levels of nesting and 1000-digit numbers, the last of duplicate keys wins, and
text after the first complete JSON value is ignored.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

TS_MIN_MS = 1_262_304_000_000  # 2010-01-01
TS_MAX_MS = 4_102_444_799_999  # 2099-12-31
INT64_MAX = 2**63 - 1
MAX_NESTING = 1000  # Jackson's StreamReadConstraints defaults (Flink 2.0's shaded Jackson)
MAX_NUMBER_CHARS = 1000


def anchored(pattern: str) -> str:
    """A whole-string match in both Python ``re.search`` and Java ``Matcher.find``."""
    return r"\A(?:" + pattern + r")(?![\s\S])"


# Symbols of the exchanges `ingest live` supports, spot and futures, raw or normalised:
# BTCUSDT, BTCUSDT.UM (venue suffix), BTCUSD_PERP, BTCUSD_250328 (Binance COIN-M),
# BTC/USD (Kraken spot), PF_XBTUSD, FI_BCHUSD_210730 (Kraken futures), BTC-USD,
# BIT-31JAN25-CDE, BTC-PERP-INTX (Coinbase): upper-case letters and digits in 1-5 parts
# joined by one of - _ / . ; 2-40 characters; no spaces or control characters.
SYMBOL_PATTERN = anchored(r"(?=[\s\S]{2,40}(?![\s\S]))[A-Z0-9]+(?:[-_/.][A-Z0-9]+){0,4}")
EXCHANGE_PATTERN = anchored(r"[a-z][a-z0-9_.-]{0,31}")
INT_PATTERN = anchored(r"-?[0-9]+")
DIGITS_PATTERN = anchored(r"[0-9]+")
# decimals are plain text: optional minus, digits, optional fraction; no exponent, no '+',
# no spaces, no '_', ASCII digits only (Python's Decimal and Java's BigDecimal both accept
# more: '3_424.5', full-width digits, ' 1.5')
DECIMAL_PATTERN = anchored(r"-?[0-9]+(?:\.[0-9]+)?")
NOT_POSITIVE_PATTERN = anchored(r"-[\s\S]*|0+(?:\.0+)?")


def fits_pattern(int_digits: int) -> str:
    """Values DECIMAL(int_digits + 8, 8) holds exactly: at most ``int_digits`` integer digits
    (leading zeros aside) and 8 decimals (trailing zeros aside)."""
    return anchored(r"0*[0-9]{1," + str(int_digits) + r"}(?:\.[0-9]{1,8}0*)?")


Kind = Literal["present", "regex", "not_regex", "int_range", "max_future", "one_of"]


@dataclass(frozen=True)
class Rule:
    """One check on one field's text; ``reason`` is what the dead letter says."""

    field: str
    kind: Kind
    reason: str
    arg: Any = None


def _field_rules(name: str, int_digits: int) -> list[Rule]:
    return [
        Rule(name, "present", f"missing field {name}"),
        Rule(name, "regex", f"{name} is not numeric", DECIMAL_PATTERN),
        Rule(name, "not_regex", f"{name} must be > 0", NOT_POSITIVE_PATTERN),
        Rule(
            name,
            "regex",
            f"{name} needs more than 8 decimals or {int_digits} digits",
            fits_pattern(int_digits),
        ),
    ]


# The one definition. "present" also rejects an array or object ("<field> is not a
# scalar"); the exchange field is optional ("unknown" when absent or null).
RULES: tuple[Rule, ...] = (
    Rule("ts_ms", "present", "missing field ts_ms"),
    Rule("ts_ms", "regex", "ts_ms is not an integer", INT_PATTERN),
    Rule("ts_ms", "int_range", "ts_ms out of range", (TS_MIN_MS, TS_MAX_MS)),
    Rule("ts_ms", "max_future", "ts_ms in the future"),
    Rule("symbol", "present", "missing field symbol"),
    Rule("symbol", "regex", "unknown symbol format", SYMBOL_PATTERN),
    *_field_rules("price", 12),
    *_field_rules("qty", 10),
    Rule("side", "present", "missing field side"),
    Rule("side", "one_of", "side must be buy or sell", ("buy", "sell")),
    Rule("trade_id", "present", "missing field trade_id"),
    Rule("trade_id", "regex", "trade_id is not a non-negative integer", DIGITS_PATTERN),
    Rule("trade_id", "int_range", "trade_id is not a non-negative integer", (0, INT64_MAX)),
    Rule("exchange", "regex", "unknown exchange format", EXCHANGE_PATTERN),
)
FIELDS = ("ts_ms", "symbol", "price", "qty", "side", "trade_id", "exchange")
OPTIONAL = {"exchange": "unknown"}
NOT_A_JSON_OBJECT = "not a JSON object"

REASONS: tuple[str, ...] = tuple(
    dict.fromkeys(
        [NOT_A_JSON_OBJECT]
        + [r for rule in RULES for r in (rule.reason, f"{rule.field} is not a scalar")]
    )
)


# -- Python side ---------------------------------------------------------------------------
NOT_SCALAR = object()  # what scalar_text gives for an array or object
_WS = " \t\n\r"
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_DECODER = json.JSONDecoder(
    parse_float=lambda s: _number(s, True),
    parse_int=lambda s: _number(s, False),
    parse_constant=lambda s: _reject(),
)


class _Rejected(ValueError):
    pass


def _reject() -> Any:
    raise _Rejected("NaN/Infinity literal")


def _number(text: str, fractional: bool) -> str:
    """A JSON number's text as Jackson/BigDecimal prints it."""
    if len(text.lstrip("-")) > MAX_NUMBER_CHARS:
        raise _Rejected("number too long")
    if not fractional:
        return "0" if text == "-0" else text
    d = Decimal(text)
    return str(d.copy_abs() if d.is_zero() else d)


def _too_deep(text: str) -> bool:
    if text.count("[") + text.count("{") <= MAX_NESTING:
        return False
    depth = peak = 0
    for ch in _STRING.sub("", text):
        if ch in "[{":
            depth += 1
            peak = max(peak, depth)
        elif ch in "]}":
            depth -= 1
    return peak > MAX_NESTING


def parse_object(payload: str | None) -> dict[str, Any] | None:
    """The payload's first JSON value if it is an object, as the job's JSON functions read
    it; None when they would find no object (``payload IS JSON OBJECT`` is false)."""
    if payload is None:
        return None
    start = len(payload) - len(payload.lstrip(_WS))
    if not payload.startswith("{", start) or _too_deep(payload):
        return None
    old_limit = sys.getrecursionlimit()
    if payload.count("[") + payload.count("{") > old_limit // 2:  # the C scanner recurses
        sys.setrecursionlimit(old_limit + 2 * MAX_NESTING)
    try:
        obj, _ = _DECODER.raw_decode(payload, start)
    except (ValueError, RecursionError):
        return None
    finally:
        sys.setrecursionlimit(old_limit)
    return obj if isinstance(obj, dict) else None


def scalar_text(value: Any) -> Any:
    """What ``JSON_VALUE`` returns for one value of :func:`parse_object`'s result: its text,
    None (null or absent), or :data:`NOT_SCALAR` (an array or object)."""
    if value is None:
        return None
    if isinstance(value, dict | list):
        return NOT_SCALAR
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def scalar_texts(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {name: scalar_text(obj.get(name)) for name in FIELDS}


def as_int(text: str) -> int | None:
    """An integer text's value; None past 64 bits (any number of leading zeros is fine)."""
    digits = text.lstrip("-").lstrip("0") or "0"
    if len(digits) > 19:
        return None
    return -int(digits) if text.startswith("-") else int(digits)


def check(texts: Mapping[str, Any], now_s: int, max_future_ms: int) -> str | None:
    """The reason of the first failing rule, or None. ``now_s``: wall clock in whole seconds
    (the SQL side's ``UNIX_TIMESTAMP()``)."""
    for rule in RULES:
        text = texts.get(rule.field)
        if text is NOT_SCALAR:
            return f"{rule.field} is not a scalar"
        if text is None:
            if rule.field in OPTIONAL:
                continue
            return rule.reason  # kind == "present"
        ok: bool
        if rule.kind == "present":
            ok = True
        elif rule.kind == "regex":
            ok = re.search(rule.arg, text) is not None
        elif rule.kind == "not_regex":
            ok = re.search(rule.arg, text) is None
        elif rule.kind == "int_range":
            lo, hi = rule.arg
            value = as_int(text)
            ok = value is not None and lo <= value <= hi
        elif rule.kind == "max_future":
            ok = int(as_int(text) or 0) <= now_s * 1000 + max_future_ms
        else:  # one_of
            ok = text in rule.arg
        if not ok:
            return rule.reason
    return None


# -- SQL side ------------------------------------------------------------------------------
def _lit(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def contract_json(max_future_ms: int) -> str:
    """:data:`RULES` (and the fields, the optional ones, the wall-clock bound) as the JSON
    that the job's ``TRADE_CHECK`` (``udfs/java/candleflow/TradeCheck.java``) interprets."""
    return json.dumps(
        {
            "fields": list(FIELDS),
            "optional": OPTIONAL,
            "not_a_json_object": NOT_A_JSON_OBJECT,
            "max_future_ms": int(max_future_ms),
            "rules": [
                {"field": r.field, "kind": r.kind, "reason": r.reason, "arg": r.arg} for r in RULES
            ],
        },
        separators=(",", ":"),
    )


def sql_check(max_future_ms: int, payload: str = "payload") -> str:
    """The SQL call that checks one record: ``TRADE_CHECK(payload, '<contract>')`` returns
    each field's ``JSON_VALUE`` text (:data:`FIELDS` order), then the first failing rule's
    reason (NULL when valid), from one parse; calls on the same record are not repeated."""
    return f"TRADE_CHECK({payload}, {_lit(contract_json(max_future_ms))})"


def sql_text(field: str, checked: str = "checked") -> str:
    """SQL for one field's text, given a :func:`sql_check` array expression ``checked``."""
    return f"{checked}[{FIELDS.index(field) + 1}]"


def sql_reason(checked: str = "checked") -> str:
    """SQL for the reason (NULL when valid), given a :func:`sql_check` array expression."""
    return f"{checked}[{len(FIELDS) + 1}]"
