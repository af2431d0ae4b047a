# ruff: noqa: RUF001 - look-alike characters are the point of these cases
"""Write ``tests/data/trades_corpus.jsonl``: adversarial trade payloads, each with the verdict
it should get, written here by hand per case (never computed by the validator under test).

    python -m tests.data.make_trades_corpus

One line per case: ``{"case": what it is, "payload": text | null, "expect": "ok" | reason}``;
``payload_b64`` instead of ``payload`` for bytes that are not valid UTF-8. Payloads that
should pass get distinct trade ids and increasing timestamps, so none is a repeat of
another. ``tests/integration/jobs/flink/test_trade_contract.py`` sends every payload raw through the
Python validator and through the candles job and asserts both give ``expect``.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).with_name("trades_corpus.jsonl")
OK = "ok"
NOT_OBJ = "not a JSON object"
BASE_TS = 1_721_347_022_707  # 2024-07-19, a real trade's time (BTCUSDT sample)
BASE = {
    "ts_ms": BASE_TS,
    "symbol": "BTCUSDT",
    "price": "64123.45",
    "qty": "0.0012",
    "side": "buy",
    "trade_id": 3_690_000_000,
    "exchange": "binance",
}
TS_2090 = 3_786_912_000_000  # 2090-01-01
MISSING = object()
cases: list[dict[str, Any]] = []


def add(case: str, payload: str | bytes | None, expect: str) -> None:
    row: dict[str, Any] = {"case": case, "expect": expect}
    if isinstance(payload, bytes):
        try:
            row["payload"] = payload.decode("utf-8")
        except UnicodeDecodeError:
            row["payload_b64"] = base64.b64encode(payload).decode()
    else:
        row["payload"] = payload
    cases.append(row)


def trade(**change: Any) -> dict[str, Any]:
    """A valid trade with a fresh id and time, then ``change`` (MISSING drops a field)."""
    n = len(cases)
    t = {**BASE, "ts_ms": BASE_TS + n, "trade_id": BASE["trade_id"] + n}
    for k, v in change.items():
        if v is MISSING:
            t.pop(k, None)
        else:
            t[k] = v
    return t


def dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def field_cases(name: str, values: list[tuple[str, Any, str]]) -> None:
    """``values``: (what, value, expect); a str value starting with RAW: is spliced in as
    literal JSON text (numbers in forms json.dumps would not write)."""
    for what, value, expect in values:
        if isinstance(value, str) and value.startswith("RAW:"):
            marker = "__RAW__"
            text = dumps(trade(**{name: marker})).replace(f'"{marker}"', value[4:])
        else:
            text = dumps(trade(**{name: value}))
        add(f"{name}: {what}", text, expect)


def main() -> None:
    # -- the payload as a whole --------------------------------------------------------
    good = dumps(trade())
    add("valid trade", good, OK)
    for what, text in [
        ("empty", ""),
        ("spaces", "   "),
        ("open brace", "{"),
        ("close brace", "}"),
        ("empty array", "[]"),
        ("array of trades", "[" + dumps(trade()) + "]"),
        ("string", '"BTCUSDT"'),
        ("number", "1721347022707"),
        ("null literal", "null"),
        ("true literal", "true"),
        ("single quotes", "{'ts_ms': 1721347022707, 'symbol': 'BTCUSDT'}"),
        ("unquoted keys", "{ts_ms: 1721347022707}"),
        ("trailing comma", good[:-1] + ",}"),
        ("truncated", good[:-10]),
        ("comment", "/* c */" + good),
        ("NaN literal price", good.replace('"64123.45"', "NaN")),
        ("Infinity literal qty", good.replace('"0.0012"', "Infinity")),
        ("-Infinity literal", good.replace('"0.0012"', "-Infinity")),
        ("leading-zero number", good.replace(f": {BASE_TS},", f": 0{BASE_TS},")),
        ("hex number", good.replace(f": {BASE_TS},", ": 0x190C9F5B0F3,")),
        ("plus-signed number", good.replace(f": {BASE_TS},", f": +{BASE_TS},")),
        ("bare-dot number", dumps(trade(x="__")).replace('"__"', ".5")),
        ("dot-ended number", dumps(trade(x="__")).replace('"__"', "5.")),
        ("raw newline inside a string", dumps(trade(note="__")).replace("__", "a\nb")),
        ("raw tab inside a string", dumps(trade(note="__")).replace("__", "a\tb")),
        ("raw NUL inside a string", dumps(trade(note="__")).replace("__", "a\x00b")),
        ("invalid escape", dumps(trade(note="__")).replace("__", "\\x41")),
        ("unterminated string", '{"ts_ms": 1721347022707, "symbol": "BTCUSDT'),
        ("UTF-8 BOM", "\ufeff" + dumps(trade())),
        ("missing colon", '{"ts_ms" 1721347022707}'),
        ("missing comma", '{"ts_ms": 1 "symbol": "X"}'),
        ("key without value", '{"ts_ms"}'),
        ("number key", "{1: 2}"),
        (
            "deeply nested extra field (1,001 levels)",
            dumps(trade(x="__")).replace('"__"', "[" * 1001 + "]" * 1001),
        ),
        ("1,001-digit number in an extra field", dumps(trade(x="__")).replace('"__"', "1" * 1001)),
        ("NUL bytes", "\x00\x00\x00"),
        ("JSON in a JSON string", json.dumps(dumps(trade()))),
        ("XML", "<trade><ts_ms>1721347022707</ts_ms></trade>"),
        ("CSV row", "1721347022707,BTCUSDT,64123.45,0.0012,buy,1,binance"),
    ]:
        add(f"payload: {what}", text, NOT_OBJ)
    add("payload: Kafka tombstone (null value)", None, NOT_OBJ)
    add("payload: UTF-16 encoded", dumps(trade()).encode("utf-16"), NOT_OBJ)
    add(
        "payload: invalid UTF-8 in the structure",
        b"{\xff\xfe" + dumps(trade())[1:].encode(),
        NOT_OBJ,
    )
    add(
        "payload: invalid UTF-8 inside an extra string (replaced, still valid)",
        dumps(trade(note="__")).encode().replace(b"__", b"\xc3\x28\xa0\xa1"),
        OK,
    )
    add(
        "payload: Latin-1 byte inside an extra string (replaced, still valid)",
        dumps(trade(note="__")).encode().replace(b"__", b"caf\xe9"),
        OK,
    )
    add("payload: leading and trailing whitespace", " \t\r\n" + dumps(trade()) + " \n", OK)
    add("payload: pretty-printed", json.dumps(trade(), indent=2), OK)
    add(
        "payload: extra fields",
        dumps(trade(venue="spot", is_best_match=True, x=[1, {"a": None}])),
        OK,
    )
    add(
        "payload: 999 levels of nesting in an extra field",
        dumps(trade(x="__")).replace('"__"', "[" * 998 + "]" * 998),
        OK,
    )
    add(
        "payload: 999-digit number in an extra field",
        dumps(trade(x="__")).replace('"__"', "1" * 999),
        OK,
    )
    add("payload: 100,000-character extra string", dumps(trade(note="n" * 100_000)), OK)
    add("payload: 5,000-element extra array", dumps(trade(x=list(range(5000)))), OK)
    add(
        "payload: unicode escapes in keys and values",
        dumps(trade()).replace('"symbol": "BTCUSDT"', '"\\u0073ymbol": "\\u0042TCUSDT"'),
        OK,
    )
    add("payload: fields in another order", dumps(dict(reversed(list(trade().items())))), OK)
    # Jackson, which the job's JSON functions use, reads the first JSON value and ignores
    # what follows it; the contract follows it (the Python side does the same)
    add("payload: text after the object (ignored)", dumps(trade()) + " trailing", OK)
    add(
        "payload: two objects back to back (first wins)",
        dumps(trade()) + dumps(trade(price="bad")),
        OK,
    )
    t = trade()
    add(
        "payload: duplicate key, the last (valid) wins",
        dumps(t)[:-1] + ', "price": "1.5"}',
        OK,
    )
    add(
        "payload: duplicate key, the last (bad) wins",
        dumps(trade())[:-1] + ', "price": "abc"}',
        "price is not numeric",
    )
    add(
        "payload: key case differs (Price)",
        dumps(trade(price=MISSING, Price="1.5")),
        "missing field price",
    )
    add(
        "payload: field only nested deeper",
        dumps(trade(ts_ms=MISSING, meta={"ts_ms": BASE_TS})),
        "missing field ts_ms",
    )
    add("payload: every field missing", "{}", "missing field ts_ms")
    add(
        "payload: first failing rule wins (ts_ms before price)",
        dumps(trade(ts_ms="x", price="y")),
        "ts_ms is not an integer",
    )
    add(
        "payload: first failing rule wins (symbol before side)",
        dumps(trade(symbol="x", side="y")),
        "unknown symbol format",
    )

    # -- ts_ms -----------------------------------------------------------------------
    field_cases(
        "ts_ms",
        [
            ("missing", MISSING, "missing field ts_ms"),
            ("null", None, "missing field ts_ms"),
            ("object", {"ms": BASE_TS}, "ts_ms is not a scalar"),
            ("array", [BASE_TS], "ts_ms is not a scalar"),
            ("empty array", [], "ts_ms is not a scalar"),
            ("empty string", "", "ts_ms is not an integer"),
            ("word", "yesterday", "ts_ms is not an integer"),
            ("ISO date string", "2024-07-19T00:37:02.707Z", "ts_ms is not an integer"),
            ("half millisecond (JSON number)", "RAW:1721347022707.5", "ts_ms is not an integer"),
            ("half millisecond (string)", "1721347022707.5", "ts_ms is not an integer"),
            ("integral float 1721347022707.0", "RAW:1721347022707.0", "ts_ms is not an integer"),
            # a BigDecimal with no fraction prints as plain digits: an integer after all
            ("exponent 1.721347022707e12", "RAW:1.721347022707e12", OK),
            ("1e20", "RAW:1e20", "ts_ms is not an integer"),
            ("1E+3 string", "1E+3", "ts_ms is not an integer"),
            ("plus sign string", "+1721347022707", "ts_ms is not an integer"),
            ("leading space", " 1721347022707", "ts_ms is not an integer"),
            ("trailing newline", "1721347022707\n", "ts_ms is not an integer"),
            ("full-width digits", "１７２１３４７０２２７０７", "ts_ms is not an integer"),
            ("Arabic-Indic digits", "١٧٢١٣٤٧٠٢٢٧٠٧", "ts_ms is not an integer"),
            ("underscores", "1_721_347_022_707", "ts_ms is not an integer"),
            ("true", True, "ts_ms is not an integer"),
            ("false", False, "ts_ms is not an integer"),
            ("0", 0, "ts_ms out of range"),
            ("-0", "RAW:-0", "ts_ms out of range"),
            ("12", 12, "ts_ms out of range"),
            ("negative", -BASE_TS, "ts_ms out of range"),
            ("seconds not ms", BASE_TS // 1000, "ts_ms out of range"),
            ("microseconds not ms", BASE_TS * 1000, "ts_ms out of range"),
            ("one before 2010-01-01", 1_262_303_999_999, "ts_ms out of range"),
            ("year 2100", 4_102_444_800_000, "ts_ms out of range"),
            ("2^63", 2**63, "ts_ms out of range"),
            ("2^64", 2**64, "ts_ms out of range"),
            ("40 digits", int("9" * 40), "ts_ms out of range"),
            ("40-digit string", "9" * 40, "ts_ms out of range"),
            ("year 2090 (well-formed)", TS_2090, "ts_ms in the future"),
            ("year 2050", 2_524_608_000_000, "ts_ms in the future"),
            ("2099-12-31T23:59:59.999", 4_102_444_799_999, "ts_ms in the future"),
            ("year 2090 as string", str(TS_2090), "ts_ms in the future"),
            ("2010-01-01 exactly", 1_262_304_000_000, OK),
            ("string of digits", str(BASE_TS + len(cases)), OK),
            ("leading zeros in a string", "000" + str(BASE_TS + len(cases)), OK),
            ("5,000 leading zeros in a string", "0" * 5000 + str(BASE_TS + len(cases)), OK),
            ("5,000-digit string", "9" * 5000, "ts_ms out of range"),
            ("2021 (the shared candles' year)", 1_609_459_200_000 + len(cases), OK),
        ],
    )

    # -- symbol ------------------------------------------------------------------------
    valid_symbols = [
        ("Binance spot", "BTCUSDT"),
        ("Binance USD-M with venue suffix", "BTCUSDT.UM"),
        ("Binance COIN-M perpetual", "BTCUSD_PERP"),
        ("Binance COIN-M perpetual with suffix", "BTCUSD_PERP.CM"),
        ("Binance COIN-M quarterly", "BTCUSD_250328"),
        ("Binance 1000-lot token", "1000SHIBUSDT"),
        ("Kraken spot v2", "BTC/USD"),
        ("Kraken spot XBT", "XBT/USD"),
        ("Kraken futures perpetual", "PF_XBTUSD"),
        ("Kraken futures inverse", "PI_XBTUSD"),
        ("Kraken futures fixed maturity", "FI_BCHUSD_210730"),
        ("Kraken futures flex fixed", "FF_XBTUSD_210326"),
        ("Coinbase spot", "BTC-USD"),
        ("Coinbase normalised", "BTCUSD"),
        ("Coinbase INTX perpetual", "BTC-PERP-INTX"),
        ("Coinbase US futures", "BIT-31JAN25-CDE"),
        ("two characters", "OP"),
        ("40 characters", "A" * 40),
        ("five parts", "A-B-C-D-E"),
        ("JSON number of digits", 123456),
    ]
    field_cases("symbol", [(w, v, OK) for w, v in valid_symbols])
    field_cases(
        "symbol",
        [
            ("missing", MISSING, "missing field symbol"),
            ("null", None, "missing field symbol"),
            ("object", {"base": "BTC"}, "symbol is not a scalar"),
            ("array", ["BTC", "USDT"], "symbol is not a scalar"),
            ("empty", "", "unknown symbol format"),
            ("one character", "B", "unknown symbol format"),
            ("41 characters", "A" * 41, "unknown symbol format"),
            ("lower case", "btcusdt", "unknown symbol format"),
            ("mixed case suffix", "BTCUSDT.um", "unknown symbol format"),
            ("space inside", "BTC USDT", "unknown symbol format"),
            ("leading space", " BTCUSDT", "unknown symbol format"),
            ("trailing newline", "ETHUSDT.UM\n", "unknown symbol format"),
            ("trailing CR LF", "ETHUSDT\r\n", "unknown symbol format"),
            ("leading tab", "\tBTCUSDT", "unknown symbol format"),
            ("NUL inside", "BTC\u0000USDT", "unknown symbol format"),
            ("line separator U+2028", "BTCUSDT\u2028", "unknown symbol format"),
            ("next line U+0085", "BTCUSDT\u0085", "unknown symbol format"),
            ("zero-width space", "BTC\u200bUSDT", "unknown symbol format"),
            ("full-width letters", "ＢＴＣＵＳＤＴ", "unknown symbol format"),
            ("Cyrillic look-alike", "BТCUSDT", "unknown symbol format"),
            ("emoji", "BTC🚀", "unknown symbol format"),
            ("lone surrogate escape", 'RAW:"BTC\\ud800"', "unknown symbol format"),
            ("double separator", "BTC--USD", "unknown symbol format"),
            ("leading separator", "-BTCUSD", "unknown symbol format"),
            ("trailing separator", "BTCUSD_", "unknown symbol format"),
            ("six parts", "A-B-C-D-E-F", "unknown symbol format"),
            ("colon separator", "BTC:USD", "unknown symbol format"),
            ("SQL quote", "BTC'USD", "unknown symbol format"),
            ("true", True, "unknown symbol format"),
            ("JSON fraction 1.5 (its text fits the format)", 1.5, OK),
        ],
    )

    # -- price and qty -------------------------------------------------------------------
    for name, digits in (("price", 12), ("qty", 10)):
        needs = f"{name} needs more than 8 decimals or {digits} digits"
        field_cases(
            name,
            [
                ("missing", MISSING, f"missing field {name}"),
                ("null", None, f"missing field {name}"),
                ("object", {"v": "1"}, f"{name} is not a scalar"),
                ("array", ["1.5"], f"{name} is not a scalar"),
                ("empty", "", f"{name} is not numeric"),
                ("word", "abc", f"{name} is not numeric"),
                ("NaN string", "NaN", f"{name} is not numeric"),
                ("Infinity string", "Infinity", f"{name} is not numeric"),
                ("-Infinity string", "-Infinity", f"{name} is not numeric"),
                ("exponent string", "1e3", f"{name} is not numeric"),
                ("exponent JSON number 1e2", "RAW:1e2", f"{name} is not numeric"),
                ("exponent JSON number 1.5e7", "RAW:1.5e7", f"{name} is not numeric"),
                ("tiny JSON number 1e-7", "RAW:1e-7", f"{name} is not numeric"),
                ("huge JSON number 1E400", "RAW:1E400", f"{name} is not numeric"),
                ("underscores", "3_424.5", f"{name} is not numeric"),
                ("full-width digits", "３４２４", f"{name} is not numeric"),
                ("Devanagari digits", "३४२४", f"{name} is not numeric"),
                ("leading space", " 1.5", f"{name} is not numeric"),
                ("trailing space", "1.5 ", f"{name} is not numeric"),
                ("trailing newline", "1.5\n", f"{name} is not numeric"),
                ("plus sign", "+1.5", f"{name} is not numeric"),
                ("bare dot", ".5", f"{name} is not numeric"),
                ("dot at end", "5.", f"{name} is not numeric"),
                ("comma decimal", "1,5", f"{name} is not numeric"),
                ("thousands comma", "3,424.5", f"{name} is not numeric"),
                ("hex", "0x10", f"{name} is not numeric"),
                ("two dots", "1.2.3", f"{name} is not numeric"),
                ("double minus", "--1", f"{name} is not numeric"),
                ("currency sign", "$1.5", f"{name} is not numeric"),
                ("true", True, f"{name} is not numeric"),
                ("0", "0", f"{name} must be > 0"),
                ("0.0", "0.0", f"{name} must be > 0"),
                ("0.00000000", "0.00000000", f"{name} must be > 0"),
                ("000", "000", f"{name} must be > 0"),
                ("JSON 0", 0, f"{name} must be > 0"),
                ("JSON -0 (printed as 0)", "RAW:-0", f"{name} must be > 0"),
                ("JSON -0.0", "RAW:-0.0", f"{name} must be > 0"),
                ("-0", "-0", f"{name} must be > 0"),
                ("-1", "-1", f"{name} must be > 0"),
                ("tiny negative", "-0.00000001", f"{name} must be > 0"),
                ("huge negative", "-" + "9" * 30, f"{name} must be > 0"),
                ("JSON -1.5", -1.5, f"{name} must be > 0"),
                ("9 decimals", "0.000000001", needs),
                ("9 significant decimals", "1.123456789", needs),
                (f"{digits + 1} integer digits", "1" + "0" * digits, needs),
                ("41 digits", "9" * 41, needs),
                ("23-digit JSON integer", "RAW:12345678901234567890123", needs),
                ("13-digit JSON fraction", "RAW:1721347022707.5", needs),
                ("max value", "9" * digits + ".99999999", OK),
                ("min value", "0.00000001", OK),
                ("trailing zeros kept (Binance style)", "354.11000000", OK),
                ("10 decimals, last two zero", "1.1234567800", OK),
                ("leading zeros", "000000000000123.5", OK),
                ("integer text", "42", OK),
                ("JSON number 3424.5", 3424.5, OK),
                ("JSON integer", 7, OK),
                ("JSON number 0.0001", "RAW:0.0001", OK),
                ("JSON number 1e-5 (printed plain)", "RAW:1e-5", OK),
                ("JSON number 100000000.0", "RAW:100000000.0", OK),
                ("JSON number 123.4560", "RAW:123.4560", OK),
            ],
        )

    # -- side ------------------------------------------------------------------------
    field_cases(
        "side",
        [
            ("sell", "sell", OK),
            ("missing", MISSING, "missing field side"),
            ("null", None, "missing field side"),
            ("object", {"s": "buy"}, "side is not a scalar"),
            ("array", ["buy"], "side is not a scalar"),
            ("upper case", "BUY", "side must be buy or sell"),
            ("capitalised", "Sell", "side must be buy or sell"),
            ("trailing space", "buy ", "side must be buy or sell"),
            ("trailing newline", "sell\n", "side must be buy or sell"),
            ("letter", "b", "side must be buy or sell"),
            ("empty", "", "side must be buy or sell"),
            ("hold", "hold", "side must be buy or sell"),
            ("maker flag true", True, "side must be buy or sell"),
            ("number", 1, "side must be buy or sell"),
            ("full-width", "ｂｕｙ", "side must be buy or sell"),
        ],
    )

    # -- trade_id --------------------------------------------------------------------
    tid = "trade_id is not a non-negative integer"
    field_cases(
        "trade_id",
        [
            ("missing", MISSING, "missing field trade_id"),
            ("null", None, "missing field trade_id"),
            ("object", {"id": 1}, "trade_id is not a scalar"),
            ("array", [1], "trade_id is not a scalar"),
            ("empty", "", tid),
            ("x1", "x1", tid),
            ("UUID (Coinbase style, not numeric)", "5e1f2a3b-aaaa-bbbb-cccc-123456789abc", tid),
            ("1.5 JSON", 1.5, tid),
            ("1.5 string", "1.5", tid),
            ("1.0 JSON", "RAW:1.0", tid),
            ("1e3 JSON", "RAW:1e3", tid),
            ("-1", -1, tid),
            ("-1 string", "-1", tid),
            ("JSON -0 (printed as 0)", "RAW:-0", OK),
            ("2^63", 2**63, tid),
            ("2^64", 2**64, tid),
            ("99999999999999999999", 99999999999999999999, tid),
            ("40 digits", "9" * 40, tid),
            ("full-width digits", "１２３", tid),
            ("leading space", " 1", tid),
            ("plus sign", "+1", tid),
            ("true", True, tid),
            ("2^63 - 1", 2**63 - 1, OK),
            ("string of digits", "4242424242", OK),
            ("leading zeros", "00042", OK),
            ("5,000 leading zeros", "0" * 5000 + "4343", OK),
            ("5,000-digit string", "9" * 5000, tid),
        ],
    )

    # -- exchange (optional) ---------------------------------------------------------
    field_cases(
        "exchange",
        [
            ("missing (-> unknown)", MISSING, OK),
            ("null (-> unknown)", None, OK),
            ("kraken", "kraken", OK),
            ("coinbase", "coinbase", OK),
            ("with dash and dot", "kraken-futures.v2", OK),
            ("32 characters", "a" * 32, OK),
            ("empty", "", "unknown exchange format"),
            ("capitalised", "Binance", "unknown exchange format"),
            ("trailing newline", "binance\n", "unknown exchange format"),
            ("space", "binance us", "unknown exchange format"),
            ("33 characters", "a" * 33, "unknown exchange format"),
            ("digit first", "1inch", "unknown exchange format"),
            ("number", 5, "unknown exchange format"),
            ("true (its text fits the format)", True, OK),
            ("control character", "bin\u0007ance", "unknown exchange format"),
            ("object", {"name": "binance"}, "exchange is not a scalar"),
            ("array", ["binance"], "exchange is not a scalar"),
        ],
    )

    with OUT.open("w", encoding="utf-8") as f:
        for row in cases:
            f.write(json.dumps(row, ensure_ascii=True) + "\n")
    print(f"{len(cases)} cases -> {OUT}")


if __name__ == "__main__":
    main()
