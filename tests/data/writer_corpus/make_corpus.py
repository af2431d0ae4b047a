"""Write ``tests/data/writer_corpus/<topic>.jsonl``: adversarial messages for the writers'
topics (candles, features, predictions, orders, fills, equity), each with the verdict it
should get.

    python -m tests.data.writer_corpus.make_corpus

The verdicts are written here by hand, per case, from the documented rules (the column
table in jobs/writers/validation.py: ClickHouse types, the DateTime span, finiteness, strings);
they are never computed by the validator under test. Only two texts come from the
standard library, because they are its messages, not ours: a JSON syntax error
(``not JSON: <json.JSONDecodeError>``) and invalid UTF-8 (``not JSON:
<UnicodeDecodeError>``).

Valid messages are derived from the real data in ``/work/shared/data``: candles from real
Binance trades (tests/reference.py, exact decimals), features from real 2021 klines
(udfs.indicators, the batch definition the stream equals), trading messages from the
strategy engine (udfs.strategy.run_batch) over real klines with seeded probabilities.
Every case gets its own key (bar time / order id), so every ``ok`` row is a distinct row in
its table. Format: tests/data/README.md ("Writers").
"""

from __future__ import annotations

import base64
import json
import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from infra.settings import SHARED_DATA

OUT = Path(__file__).parent
MISSING = object()
T_MAX = 2**32 * 1000  # exclusive: epoch ms of 2106-02-07T06:28:16Z (DateTime = UInt32 s)
DT = "epoch ms of a DateTime (1970-01-01T00:00:00.000Z .. 2106-02-07T06:28:15.999Z)"
BAR = "epoch ms of a bar end (1970-01-01T00:00:00.001Z .. 2106-02-07T06:28:16.000Z)"
ISO_RANGE = "a DateTime (1970-01-01T00:00:00.000Z .. 2106-02-07T06:28:15.999Z)"
ISO_FMT = "expected YYYY-MM-DDTHH:MM:SS[.fff][Z|+HH:MM]"
I64 = "Int64 [-2**63, 2**63)"
COUNT = "Int64 [0, 2**63)"
U32 = "UInt32 [0, 2**32)"


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def dumps(obj: Any) -> str:
    return json.dumps(obj, allow_nan=False, ensure_ascii=False)


def json_error(text: str | bytes) -> str:
    """The stdlib's message for a payload that is not JSON (see the module docstring)."""
    try:
        json.loads(text)
    except UnicodeDecodeError as e:
        return f"not JSON: {e}"
    except json.JSONDecodeError as e:
        return f"not JSON: {e}"
    raise AssertionError(f"valid JSON: {text[:80]!r}")


# ------------------------------------------------------------------------ base messages
def candle_bases() -> list[dict[str, Any]]:
    """Real 1m/5m candles of BTCUSDT.UM trades (exact decimals -> the JSON numbers)."""
    from tests.reference import candles_reference

    df = pd.read_parquet(SHARED_DATA / "binance_trades_sample.parquet")
    df = df[df.symbol == "BTCUSDT.UM"].head(3000)
    out = []
    for (sym, tf, ws), c in sorted(candles_reference(df.to_dict("records")).items()):
        if tf not in ("1m", "5m"):
            continue
        out.append(
            {
                "symbol": sym,
                "timeframe": tf,
                "window_start_ms": ws,
                "window_end_ms": c["window_end_ms"],
                **{k: float(c[k]) for k in ("open", "high", "low", "close", "volume")},
                "quote_volume": float(c["quote_volume"]),
                "vwap": float(c["vwap"]),
                "trade_count": int(c["trade_count"]),
                "buy_volume": float(c["buy_volume"]),
                "sell_volume": float(c["sell_volume"]),
                "first_trade_id": c["first_trade_id"],
                "last_trade_id": c["last_trade_id"],
                "emitted_at": iso(c["window_end_ms"] + 2_137),
            }
        )
    assert len(out) >= 3
    return out[:3]


def feature_bases() -> list[dict[str, Any]]:
    """Real BTCUSDT 1m klines of 2021 -> the features job's rows (warm-up and warm)."""
    from udfs.indicators import FEATURE_NAMES, INPUTS, compute_series

    df = pd.read_csv(SHARED_DATA / "binance_1m_top5_2021.csv.gz")
    df = df[df.symbol == "BTCUSDT"].sort_values("ts_ms").head(120).reset_index(drop=True)
    df["vwap"] = (df.high + df.low + df.close) / 3  # the file has no VWAP; the tests' proxy
    feats = compute_series({k: df[k].to_numpy(np.float64) for k in INPUTS})
    out = []
    for t in (8, 119):
        r = df.iloc[t]
        row: dict[str, Any] = {
            "feature_key": "BTCUSDT|1m",
            "symbol": "BTCUSDT",
            "timeframe": "1m",
            "window_start_ms": int(r.ts_ms),
            "window_end_ms": int(r.ts_ms) + 60_000,
            **{k: float(r[k]) for k in ("open", "high", "low", "close", "volume", "vwap")},
            "trade_count": 1,  # jobs/features.kline_message: klines carry no count
        }
        vals = {n: float(feats[n][t]) for n in FEATURE_NAMES}
        row |= {n: (None if math.isnan(v) else v) for n, v in vals.items()}
        row["features_ready"] = all(v is not None for v in row.values())
        row["event_time"] = iso(int(r.ts_ms) + 59_999)
        row["computed_at"] = iso(int(r.ts_ms) + 60_000 + 4_321)
        out.append(row)
    assert out[0]["features_ready"] is False and out[1]["features_ready"] is True
    return out


def trading_bases() -> dict[str, list[dict[str, Any]]]:
    """The strategy engine over real klines (3 symbols x 400 bars), seeded probabilities."""
    from udfs.strategy import StrategyConfig, run_batch

    df = pd.read_csv(SHARED_DATA / "binance_1m_top5_2021.csv.gz")
    syms = ["BNBUSDT", "BTCUSDT", "ETHUSDT"]
    df = df[df.symbol.isin(syms)].sort_values(["ts_ms", "symbol"]).groupby("symbol").head(400)
    bars = df.assign(bar_end_ms=df.ts_ms + 60_000).reset_index(drop=True)
    p = np.random.default_rng(13).dirichlet([2, 3, 2], size=len(bars))
    bars["p_down"], bars["p_flat"], bars["p_up"] = p[:, 0], p[:, 1], p[:, 2]
    cfg = StrategyConfig(strategy_id="cf1", position_fraction=1.0, max_hold_bars=3,
                         max_position_notional=1e9, max_gross_notional=1e9)  # fmt: skip
    orders, fills, equity = run_batch(bars, cfg)

    def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
        out = []
        for rec in frame.to_dict("records"):
            row = {str(k): (v.item() if isinstance(v, np.generic) else v) for k, v in rec.items()}
            row = {
                k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()
            }
            out.append(row | {"strategy": "cf1", "timeframe": "1m"})
        return out

    b = bars.iloc[100]
    pred = {
        "prediction_key": f"{b.symbol}|1m",
        "symbol": b.symbol,
        "timeframe": "1m",
        "bar_end_ms": int(b.bar_end_ms),
        "model_tag": "candleflow_xgb:3f2a9c1",
        "p_down": float(b.p_down),
        "p_flat": float(b.p_flat),
        "p_up": float(b.p_up),
        "signal": float(b.p_up) - float(b.p_down),
        "status": "ok",
        "reason": None,
        "latency_ms": 3.25,
        "predicted_at_ms": int(b.bar_end_ms) + 61,
    }
    o, f, e = records(orders), records(fills), records(equity)
    assert o and f and e
    return {"predictions": [pred], "orders": o[:1], "fills": f[:1], "equity": e[:1]}


# ------------------------------------------------------------------------------ corpus
class Corpus:
    """The cases of one topic. ``fresh(change)``: the base message with its own key (a new
    bar time per case, so no two cases share a row), then ``change`` (MISSING drops a
    field; a ``RAW:`` string is spliced in as literal JSON text)."""

    def __init__(self, topic: str, base: dict[str, Any], rekey: Any) -> None:
        self.topic = topic
        self.base = base
        self.rekey = rekey  # (message, n) -> message with a key of its own
        self.cases: list[dict[str, Any]] = []

    def fresh(self, /, **change: Any) -> dict[str, Any]:
        m = self.rekey(dict(self.base), len(self.cases) + 1)
        for k, v in change.items():
            if v is MISSING:
                m.pop(k, None)
            else:
                m[k] = v
        return m

    def text(self, msg: dict[str, Any]) -> str:
        raws: dict[str, str] = {}
        for k, v in list(msg.items()):
            if isinstance(v, str) and v.startswith("RAW:"):
                raws[k] = v[4:]
                msg[k] = f"__RAW_{k}__"
        out = dumps(msg)
        for k, raw in raws.items():
            out = out.replace(f'"__RAW_{k}__"', raw)
        return out

    def add(
        self,
        case: str,
        payload: str | bytes | None,
        reason: str | None,
        stored: dict[str, Any] | None = None,
    ) -> None:
        row: dict[str, Any] = {"case": case}
        if isinstance(payload, bytes):
            try:
                row["payload"] = payload.decode("utf-8")
            except UnicodeDecodeError:
                row["payload_b64"] = base64.b64encode(payload).decode()
        else:
            row["payload"] = payload
        row["expect"] = "ok" if reason is None else "dlq"
        if reason is not None:
            row["reason"] = reason
        if stored:
            row["stored"] = stored
        self.cases.append(row)

    def edit(self, case: str, fn: Any, reason: str | None = None) -> None:
        """A case built by ``fn(message)`` (in place; returns the ``stored`` values)."""
        m = self.fresh()
        stored = fn(m)
        self.add(case, self.text(m), reason, stored)

    def ok(self, case: str, stored: dict[str, Any] | None = None, /, **change: Any) -> None:
        self.add(case, self.text(self.fresh(**change)), None, stored)

    def bad(self, case: str, reason: str, /, **change: Any) -> None:
        self.add(case, self.text(self.fresh(**change)), reason)

    def write(self) -> Path:
        path = OUT / f"{self.topic}.jsonl"
        with path.open("w") as f:
            for c in self.cases:
                f.write(json.dumps(c, ensure_ascii=False) + "\n")
        return path


def envelope(c: Corpus, required: list[str]) -> None:
    """The message as a whole: framing, JSON syntax, encodings, shape, duplicates."""
    good = c.text(c.fresh())
    first = required[0]
    c.add("empty message", "", "empty message")
    c.add("Kafka tombstone (null value)", None, "empty message")
    c.add("whitespace only", " \n", json_error(" \n"))
    c.add("not JSON", "{nope", json_error("{nope"))
    c.add("plain text", "hello", json_error("hello"))
    cut = good[: len(good) // 2]
    c.add("truncated message", cut, json_error(cut))
    c.add("text after the object", good + " x", json_error(good + " x"))
    c.add("two objects back to back", good + good, json_error(good + good))
    c.add("single quotes", good.replace('"', "'"), json_error(good.replace('"', "'")))
    c.add("JSON array", "[1, 2]", "not a JSON object")
    c.add("array of the message", f"[{good}]", "not a JSON object")
    c.add("JSON string", '"hello"', "not a JSON object")
    c.add("JSON number", "42", "not a JSON object")
    c.add("JSON null", "null", "not a JSON object")
    c.add("JSON true", "true", "not a JSON object")
    c.add("empty object", "{}", f"missing fields: {', '.join(required[:5])}")
    c.bad(f"missing {first}", f"missing fields: {first}", **{first: MISSING})
    c.bad(
        f"missing {required[-1]} and {required[-2]}",
        f"missing fields: {required[-2]}, {required[-1]}",
        **{required[-1]: MISSING, required[-2]: MISSING},
    )
    c.bad(f"field name in another case ({first.capitalize()})", f"missing fields: {first}",
          **{first: MISSING, first.capitalize(): c.base[first]})  # fmt: skip
    bad_utf8 = c.text(c.fresh())[:-1].encode() + b', "note": "caf\xe9"}'
    c.add("invalid UTF-8 (latin-1 byte) in an extra field", bad_utf8, json_error(bad_utf8))
    over = c.text(c.fresh())[:-1].encode() + b', "note": "\xc0\xaf"}'
    c.add("invalid UTF-8 (overlong encoding)", over, json_error(over))
    sur = c.text(c.fresh())[:-1].encode() + b', "note": "\xed\xa0\x80"}'
    # json.loads decodes bytes with "surrogatepass": CESU-style surrogate bytes become a lone
    # surrogate, harmless in a dropped field, not storable in a kept one (see ident())
    c.add("UTF-8-encoded surrogate in an extra field (dropped)", sur, None)
    tail = c.text(c.fresh())[:-1].encode() + b', "note": "\xe2\x82"}'
    c.add("invalid UTF-8 (truncated sequence)", tail, json_error(tail))
    bom = b"\xef\xbb\xbf" + c.text(c.fresh()).encode()
    # json.loads(bytes) detects the encoding (RFC 8259 8.1): a BOM or UTF-16 is read alike
    c.add("UTF-8 byte order mark (skipped)", bom, None)
    c.add("UTF-16 encoded (detected)", c.text(c.fresh()).encode("utf-16-le"), None)
    c.add("NUL bytes", "\x00\x00", json_error("\x00\x00"))
    raw_ctl = c.text(c.fresh(note="__CTL__")).replace("__CTL__", "a\x01b")
    c.add("raw (unescaped) control character in a string", raw_ctl, json_error(raw_ctl))
    dup = c.text(c.fresh())
    dup = dup[:-1] + f", {json.dumps(first)}: {json.dumps(c.base[first])}}}"
    c.add(f"duplicate field ({first}, same value twice)", dup, f"duplicate field: {first!r}")
    dup2 = c.text(c.fresh(note=1))[:-1] + ', "note": 2}'
    c.add("duplicate extra field", dup2, "duplicate field: 'note'")
    nested_dup = c.text(c.fresh(meta='RAW:{"a": 1, "a": 2}'))
    c.add("duplicate field in a nested extra object", nested_dup, "duplicate field: 'a'")
    c.bad("20,000 levels of nesting in an extra field", "not JSON: nested too deeply",
          deep="RAW:" + "[" * 20_000 + "]" * 20_000)  # fmt: skip
    c.bad("5,000-digit integer in an extra field",
          "not JSON: Exceeds the limit (4300 digits) for integer string conversion: value has "
          "5000 digits; use sys.set_int_max_str_digits() to increase the limit",
          big="RAW:" + "9" * 5_000)  # fmt: skip
    c.ok("4,000-digit integer in an extra field (dropped)", big="RAW:" + "9" * 4_000)
    c.ok("50 levels of nesting in an extra field (dropped)", deep="RAW:" + "[" * 50 + "]" * 50)
    c.ok("extra fields of every JSON type (dropped)",
         x_obj={"a": [1, None, True]}, x_arr=[], x_str="s", x_num=1.5, x_null=None)  # fmt: skip
    c.ok("extra field with NaN and control characters (dropped)",
         x_nan="RAW:NaN", x_ctl="\x00\x01\x1b")  # fmt: skip
    msg = c.fresh()
    c.add("pretty-printed, fields in reverse order",
          json.dumps(dict(reversed(list(msg.items()))), indent=2), None)  # fmt: skip
    msg = c.fresh()
    c.add("whitespace around the object", " \t\r\n" + dumps(msg) + "\n ", None)
    msg = c.fresh()
    text = dumps(msg).replace(
        f'"{first}"', '"' + "".join(f"\\u{ord(ch):04x}" for ch in first) + '"'
    )
    c.add(f"field name {first} written with \\u escapes", text, None)


def ident(c: Corpus, name: str, ok_value: str) -> None:
    """A non-empty identifier (String column, sorting key or Feast entity key)."""
    ne = f"{name}: expected a non-empty string"
    c.bad(f"{name}: empty", ne, **{name: ""})
    c.bad(f"{name}: null", ne, **{name: None})
    c.bad(f"{name}: number", ne, **{name: 5})
    c.bad(f"{name}: boolean", ne, **{name: True})
    c.bad(f"{name}: array", ne, **{name: [ok_value]})
    c.bad(f"{name}: object", ne, **{name: {"v": ok_value}})
    ctl = f"{name}: control characters are not allowed"
    c.bad(f"{name}: NUL inside", ctl, **{name: ok_value[:3] + "\x00" + ok_value[3:]})
    c.bad(f"{name}: trailing newline", ctl, **{name: ok_value + "\n"})
    c.bad(f"{name}: tab", ctl, **{name: "\t" + ok_value})
    c.bad(f"{name}: ESC (ANSI colour)", ctl, **{name: "\x1b[31m" + ok_value})
    c.bad(f"{name}: DEL", ctl, **{name: ok_value + "\x7f"})
    c.bad(f"{name}: C1 control U+0085", ctl, **{name: ok_value + "\u0085"})
    c.bad(f"{name}: lone surrogate (JSON \\ud800)", f"{name}: not valid Unicode (a lone surrogate)",
          **{name: f"RAW:\"{ok_value}\\ud800\""})  # fmt: skip
    sur = c.text(c.fresh(**{name: "__SUR__"})).encode()
    sur = sur.replace(b"__SUR__", ok_value.encode() + b"\xed\xa0\x80")
    c.add(f"{name}: UTF-8-encoded surrogate bytes", sur,
          f"{name}: not valid Unicode (a lone surrogate)")  # fmt: skip
    c.bad(f"{name}: 257 characters", f"{name}: longer than 256 characters",
          **{name: (ok_value * 300)[:257]})  # fmt: skip


def ident_ok(c: Corpus, name: str, ok_value: str) -> None:
    c.ok(f"{name}: 256 characters", {name: (ok_value * 300)[:256]},
         **{name: (ok_value * 300)[:256]})  # fmt: skip
    c.ok(f"{name}: non-ASCII letters and emoji", {name: ok_value + "-é€🚀"},
         **{name: ok_value + "-é€🚀"})  # fmt: skip
    c.ok(f"{name}: written with \\u escapes", {name: ok_value},
         **{name: "RAW:\"" + "".join(f"\\u{ord(ch):04x}" for ch in ok_value) + "\""})  # fmt: skip


def integer(c: Corpus, name: str, rng: str) -> None:
    """Common bad values of an integer column; ``rng``: the range text of its reason."""
    ei, oor = f"{name}: expected an integer", f"{name}: out of range for {rng}"
    c.bad(f"{name}: 2**63", oor, **{name: 2**63})
    c.bad(f"{name}: 2**64", oor, **{name: 2**64})
    c.bad(f"{name}: 2**70", oor, **{name: 2**70})
    c.bad(f"{name}: 40 digits", oor, **{name: int("9" * 40)})
    c.bad(f"{name}: 1e20 (an integral float)", oor, **{name: "RAW:1e20"})
    c.bad(f"{name}: -2**63 - 1", oor, **{name: -(2**63) - 1})
    c.bad(f"{name}: fraction", ei, **{name: 1.5})
    c.bad(f"{name}: numeric string", ei, **{name: "7"})
    c.bad(f"{name}: true", ei, **{name: True})
    c.bad(f"{name}: false", ei, **{name: False})
    c.bad(f"{name}: null", ei, **{name: None})
    c.bad(f"{name}: array", ei, **{name: [1]})
    c.bad(f"{name}: NaN literal", ei, **{name: "RAW:NaN"})
    c.bad(f"{name}: Infinity literal", ei, **{name: "RAW:Infinity"})
    c.bad(f"{name}: 1E400 (overflows to inf)", ei, **{name: "RAW:1E400"})


def number(c: Corpus, name: str, expected: str = "a finite number") -> None:
    """Bad values of a Float64 column (``expected``: the reason's wording)."""
    e = f"{name}: expected {expected}"
    for what, v in [
        ("numeric string", "1.5"),
        ("true", True),
        ("array", [1.5]),
        ("object", {"v": 1.5}),
        ("NaN literal", "RAW:NaN"),
        ("Infinity literal", "RAW:Infinity"),
        ("-Infinity literal", "RAW:-Infinity"),
        ("1e400 (overflows to inf)", "RAW:1e400"),
        ("400-digit integer (no float holds it)", "RAW:" + "9" * 400),
    ]:
        if expected.startswith("a number") and what == "NaN literal":
            continue  # a nullable number that may be NaN
        c.bad(f"{name}: {what}", e, **{name: v})
    if not expected.endswith("or null"):
        c.bad(f"{name}: null", e, **{name: None})


def number_ok(c: Corpus, name: str) -> None:
    c.ok(f"{name}: JSON integer (stored as a float)", {name: 3.0}, **{name: 3})
    c.ok(f"{name}: 40-digit integer (1e40)", {name: 1e40}, **{name: int("1" + "0" * 40)})
    c.ok(f"{name}: -0.0", {name: -0.0}, **{name: -0.0})
    c.ok(f"{name}: smallest subnormal", {name: 5e-324}, **{name: 5e-324})
    c.ok(f"{name}: largest double", {name: 1.7976931348623157e308},
         **{name: 1.7976931348623157e308})  # fmt: skip


def iso_field(c: Corpus, name: str, int_ok: bool = False) -> None:
    """Bad values of an ISO-8601 timestamp field (stored as epoch ms, within DateTime)."""
    nat = f"{name}: not an ISO-8601 timestamp"
    oor = f"{name}: out of range for {ISO_RANGE}"
    fmt = f"{nat} ({ISO_FMT})"
    c.bad(f"{name}: 9999-12-31", oor, **{name: "9999-12-31T23:59:59.999Z"})
    c.bad(f"{name}: 2106-02-07T06:28:16Z (one second past UInt32)", oor,
          **{name: "2106-02-07T06:28:16.000Z"})  # fmt: skip
    c.bad(f"{name}: 1969-12-31T23:59:59.999Z", oor, **{name: "1969-12-31T23:59:59.999Z"})
    c.bad(f"{name}: 1970-01-01 with a +01:00 offset (1969 in UTC)", oor,
          **{name: "1970-01-01T00:30:00+01:00"})  # fmt: skip
    c.bad(f"{name}: year 0000", f"{nat} (year 0 is out of range)",
          **{name: "0000-01-01T00:00:00Z"})  # fmt: skip
    c.bad(f"{name}: year 0001", oor, **{name: "0001-01-01T00:00:00Z"})
    c.bad(f"{name}: February 30", f"{nat} (day is out of range for month)",
          **{name: "2021-02-30T00:00:00Z"})  # fmt: skip
    c.bad(f"{name}: month 13", f"{nat} (month must be in 1..12)", **{name: "2021-13-01T00:00:00Z"})
    c.bad(f"{name}: hour 24", f"{nat} (hour must be in 0..23)", **{name: "2021-04-02T24:00:00Z"})
    c.bad(f"{name}: leap second", f"{nat} (second must be in 0..59)",
          **{name: "2016-12-31T23:59:60Z"})  # fmt: skip
    for what, v in [
        ("free text", "yesterday"),
        ("empty string", ""),
        ("date only", "2021-04-02"),
        ("ISO week date", "2021-W13-5T00:00:00Z"),
        ("comma before the fraction", "2021-04-02T00:00:59,999Z"),
        ("lower-case z", "2021-04-02T00:00:59.999z"),
        ("10 fraction digits", "2021-04-02T00:00:59.9999999999Z"),
        ("offset without colon", "2021-04-02T00:00:59.999+0000"),
        ("5-digit year", "12021-04-02T00:00:59.999Z"),
        ("trailing space", "2021-04-02T00:00:59.999Z "),
        ("epoch ms as a string", "1617321659999"),
        ("Arabic-Indic digits", "\u0662\u0660\u0662\u0661-04-02T00:00:59.999Z"),
    ]:
        c.bad(f"{name}: {what}", fmt, **{name: v})
    nas = f"{nat} (not a string)"
    c.bad(f"{name}: null", nas, **{name: None})
    c.bad(f"{name}: true", nas, **{name: True})
    c.bad(f"{name}: fraction", nas, **{name: 1617321659999.5})
    if not int_ok:
        c.bad(f"{name}: epoch ms as an integer", nas, **{name: 1617321659999})


def bar_window(c: Corpus) -> None:
    """window_start_ms feeds the DateTime partition; window_end_ms is the bar's exclusive
    end (the last bar ends at 2**32 * 1000)."""
    integer(c, "window_start_ms", DT)
    integer(c, "window_end_ms", BAR)
    c.bad("window_start_ms: -1", f"window_start_ms: out of range for {DT}", window_start_ms=-1)
    c.bad("window_end_ms: 0", f"window_end_ms: out of range for {BAR}", window_end_ms=0)
    c.bad("window_start_ms: 2**32 * 1000 (2106-02-07T06:28:16Z)",
          f"window_start_ms: out of range for {DT}", window_start_ms=T_MAX,
          window_end_ms=T_MAX + 60_000)  # fmt: skip
    c.bad("window_end_ms: 2**32 * 1000 + 1", f"window_end_ms: out of range for {BAR}",
          window_end_ms=T_MAX + 1)  # fmt: skip


def windows(c: Corpus) -> None:
    """The bar's window: end after start; start as an integral float."""

    def equal(m: dict[str, Any]) -> None:
        m["window_end_ms"] = m["window_start_ms"]

    def before(m: dict[str, Any]) -> None:
        m["window_end_ms"] = m["window_start_ms"] - 60_000

    def integral_float(m: dict[str, Any]) -> dict[str, Any]:
        ws = m["window_start_ms"]
        m["window_start_ms"] = f"RAW:{ws}.0"
        return {"window_start_ms": ws}

    c.edit("window_end_ms == window_start_ms", equal, "window_end_ms <= window_start_ms")
    c.edit("window_end_ms before window_start_ms", before, "window_end_ms <= window_start_ms")
    c.edit("window_start_ms as an integral float", integral_float)


def flag(c: Corpus, name: str) -> None:
    e = f"{name}: expected true/false"
    for what, v in [("1", 1), ("0", 0), ("string true", "true"), ("null", None), ("1.0", 1.0)]:
        c.bad(f"{name}: {what}", e, **{name: v})


def choice(c: Corpus, name: str, choices: tuple[str, ...]) -> None:
    e = f"{name}: expected one of {', '.join(choices)}, got "
    for what, v, shown in [
        ("unknown value", "short", "'short'"),
        ("upper case", choices[0].upper(), repr(choices[0].upper())),
        ("padded", f" {choices[0]}", repr(f" {choices[0]}")),
        ("empty", "", "''"),
        ("null", None, "None"),
        ("number", 1, "1"),
        ("long string (shown cut)", "x" * 1000, repr("x" * 1000)[:37] + "..."),
    ]:
        c.bad(f"{name}: {what}", e + shown, **{name: v})


# ------------------------------------------------------------------------------ topics
def candles() -> Corpus:
    bases = candle_bases()

    def rekey(m: dict[str, Any], n: int) -> dict[str, Any]:
        ws = m["window_start_ms"] + n * 300_000
        width = m["window_end_ms"] - m["window_start_ms"]
        return m | {"window_start_ms": ws, "window_end_ms": ws + width,
                    "emitted_at": iso(ws + width + 2_137)}  # fmt: skip

    c = Corpus("candles", bases[0], rekey)
    required = list(bases[0])
    for i, b in enumerate(bases):  # the real candles, as they are
        c.add(f"real candle {i + 1} ({b['timeframe']}, BTCUSDT.UM trades)", dumps(b), None)
    envelope(c, required)
    ident(c, "symbol", "BTCUSDT")
    ident(c, "timeframe", "1m")
    ident_ok(c, "symbol", "BTCUSDT")
    c.bad("symbol: 70,000 characters (message > the 64 KiB DLQ payload cap)",
          "symbol: longer than 256 characters", symbol="B" * 70_000)  # fmt: skip
    bar_window(c)
    windows(c)
    c.ok("first candle of 1970", {"window_start_ms": 0, "emitted_at": 60_001},
         window_start_ms=0, window_end_ms=60_000, emitted_at=iso(60_001))  # fmt: skip
    c.ok("last candle before 2106-02-07T06:28:16Z",
         {"window_start_ms": T_MAX - 60_000, "emitted_at": T_MAX - 1},
         window_start_ms=T_MAX - 60_000, window_end_ms=T_MAX,
         emitted_at=iso(T_MAX - 1))  # fmt: skip
    for f in ("open", "high", "low", "close", "volume", "quote_volume", "vwap",
              "buy_volume", "sell_volume"):  # fmt: skip
        number(c, f)
    number_ok(c, "close")
    c.ok("close: negative (a number; prices are not checked for sense here)", {"close": -1.0},
         close=-1.0)  # fmt: skip
    integer(c, "trade_count", COUNT)
    c.bad("trade_count: -1", f"trade_count: out of range for {COUNT}", trade_count=-1)
    c.ok("trade_count: 3.0 (an integral float)", {"trade_count": 3}, trade_count=3.0)
    c.ok("trade_count: 2**63 - 1", {"trade_count": 2**63 - 1}, trade_count=2**63 - 1)
    c.ok("trade_count: 0", {"trade_count": 0}, trade_count=0)
    for f in ("first_trade_id", "last_trade_id"):
        integer(c, f, I64)
    c.ok("first_trade_id: -2**63", {"first_trade_id": -(2**63)}, first_trade_id=-(2**63))
    c.ok("last_trade_id: 2**63 - 1", {"last_trade_id": 2**63 - 1}, last_trade_id=2**63 - 1)
    iso_field(c, "emitted_at", int_ok=True)
    c.ok("emitted_at: epoch ms as an integer", {"emitted_at": 1680652805123},
         emitted_at=1680652805123)  # fmt: skip
    c.ok("emitted_at: +05:30 offset", {"emitted_at": 1680652805123},
         emitted_at="2023-04-05T05:30:05.123+05:30")  # fmt: skip
    c.ok("emitted_at: no offset (UTC)", {"emitted_at": 1680652805123},
         emitted_at="2023-04-05T00:00:05.123")  # fmt: skip
    c.ok("emitted_at: space instead of T, 9 fraction digits", {"emitted_at": 1680652805123},
         emitted_at="2023-04-05 00:00:05.123456789Z")  # fmt: skip
    c.bad("emitted_at: 2**70 ms", f"emitted_at: out of range for {ISO_RANGE}", emitted_at=2**70)
    c.bad("emitted_at: -1 ms", f"emitted_at: out of range for {ISO_RANGE}", emitted_at=-1)
    c.bad("first failing field wins (symbol before close)", "symbol: expected a non-empty string",
          symbol="", close=None)  # fmt: skip
    return c


def features() -> Corpus:
    from udfs.indicators import FEATURE_NAMES

    bases = feature_bases()

    def rekey(m: dict[str, Any], n: int) -> dict[str, Any]:
        ws = m["window_start_ms"] + n * 60_000 * 7
        return m | {"window_start_ms": ws, "window_end_ms": ws + 60_000,
                    "event_time": iso(ws + 59_999), "computed_at": iso(ws + 64_321)}  # fmt: skip

    c = Corpus("features", bases[1], rekey)
    required = list(bases[1])
    for b in bases:
        c.add(f"real feature row (BTCUSDT 2021 klines, ready={b['features_ready']})", dumps(b),
              None)  # fmt: skip
    envelope(c, required)
    for f, v in (("feature_key", "BTCUSDT|1m"), ("symbol", "BTCUSDT"), ("timeframe", "1m")):
        ident(c, f, v)
    ident_ok(c, "symbol", "BTCUSDT")
    bar_window(c)
    windows(c)
    for f in ("open", "high", "low", "close", "volume", "vwap"):
        number(c, f)
    number_ok(c, "vwap")
    integer(c, "trade_count", COUNT)
    c.bad("trade_count: -1", f"trade_count: out of range for {COUNT}", trade_count=-1)
    c.ok("trade_count: 7.0 (an integral float)", {"trade_count": 7}, trade_count=7.0)
    for f in (FEATURE_NAMES[0], FEATURE_NAMES[7], FEATURE_NAMES[-1]):
        number(c, f, "a finite number or null")
    f0 = FEATURE_NAMES[0]
    c.ok(f"{f0}: null (not warm yet)", {f0: None}, **{f0: None})
    c.ok(f"{f0}: JSON integer (stored as a float)", {f0: 5.0}, **{f0: 5})
    flag(c, "features_ready")
    for f in ("event_time", "computed_at"):
        iso_field(c, f)

    def plus_two_hours(m: dict[str, Any]) -> dict[str, Any]:
        et = m["window_end_ms"] - 1
        local = datetime.fromtimestamp(et / 1000, timezone(timedelta(hours=2)))
        m["event_time"] = local.isoformat(timespec="milliseconds")  # ...+02:00
        return {"event_time": et}

    c.edit("event_time: +02:00 offset", plus_two_hours)
    c.ok("first bar of 1970", {"window_start_ms": 0, "event_time": 59_999},
         window_start_ms=0, window_end_ms=60_000, event_time=iso(59_999),
         computed_at=iso(64_321))  # fmt: skip
    c.ok("last bar before 2106-02-07T06:28:16Z (Feast, parquet, Redis hold it)",
         {"window_start_ms": T_MAX - 60_000, "event_time": T_MAX - 1,
          "computed_at": T_MAX - 1},
         window_start_ms=T_MAX - 60_000, window_end_ms=T_MAX, event_time=iso(T_MAX - 1),
         computed_at=iso(T_MAX - 1))  # fmt: skip
    c.bad("window_start_ms = 2**70 (crashed the writer before)",
          f"window_start_ms: out of range for {DT}", window_start_ms=2**70)  # fmt: skip
    c.bad("trade_count = 2**64 (crashed the writer before)",
          f"trade_count: out of range for {COUNT}", trade_count=2**64)  # fmt: skip
    return c


# the tables' columns in order (sql/clickhouse/005_strategy.sql): "missing fields" lists them
TABLE_COLUMNS = {
    "predictions": ["symbol", "timeframe", "bar_end_ms", "model_tag", "p_down", "p_flat", "p_up",
                    "signal", "status", "reason", "latency_ms", "predicted_at_ms"],
    "orders": ["strategy", "timeframe", "client_order_id", "symbol", "bar_end_ms", "side", "qty",
               "decision_price", "reason", "signal", "status"],
    "fills": ["strategy", "timeframe", "client_order_id", "symbol", "bar_end_ms", "side", "qty",
              "price", "fee", "position_after", "avg_entry_after", "realized_pnl", "cash_after"],
    "equity": ["strategy", "timeframe", "bar_end_ms", "cash", "equity", "gross", "realized_pnl",
               "fees_paid", "killed", "degraded"],
}  # fmt: skip


def trading(kind: str, base: dict[str, Any]) -> Corpus:
    from udfs.topics import ORDER_REASONS, ORDER_STATUSES, PREDICTION_STATUSES, SIDES

    def rekey(m: dict[str, Any], n: int) -> dict[str, Any]:
        end = m["bar_end_ms"] + n * 60_000
        out = m | {"bar_end_ms": end}
        if "client_order_id" in m:
            out["client_order_id"] = f"{m['client_order_id']}-c{n}"
        if "predicted_at_ms" in m:
            out["predicted_at_ms"] = end + 61
        return out

    c = Corpus(kind, base, rekey)
    fields = TABLE_COLUMNS[kind]
    c.add(f"real {kind} message (strategy engine, 2021 klines)", dumps(base), None)
    envelope(c, fields)
    keys = [f for f in ("strategy", "timeframe", "client_order_id", "symbol") if f in base]
    for f in keys:
        ident(c, f, str(base[f]))
    ident_ok(c, keys[-1], str(base[keys[-1]]))
    integer(c, "bar_end_ms", BAR)
    oor = f"bar_end_ms: out of range for {BAR}"
    c.bad("bar_end_ms: 0", oor, bar_end_ms=0)
    c.bad("bar_end_ms: -60000", oor, bar_end_ms=-60_000)
    c.bad("bar_end_ms: 2**32 * 1000 + 1", oor, bar_end_ms=T_MAX + 1)
    c.bad("bar_end_ms: 2**62 (the orders version would overflow)", oor, bar_end_ms=2**62)
    stored_end = {"bar_end_ms": 1}
    if kind == "predictions":
        c.ok("bar_end_ms: 1 (first bar end of 1970)", stored_end, bar_end_ms=1,
             predicted_at_ms=62)  # fmt: skip
        c.ok("bar_end_ms: 2**32 * 1000 (last DateTime second)", {"bar_end_ms": T_MAX},
             bar_end_ms=T_MAX, predicted_at_ms=T_MAX - 1)  # fmt: skip
    else:
        c.ok("bar_end_ms: 1 (first bar end of 1970)", stored_end, bar_end_ms=1)
        c.ok("bar_end_ms: 2**32 * 1000 (last DateTime second)", {"bar_end_ms": T_MAX},
             bar_end_ms=T_MAX)  # fmt: skip

    def integral_float(m: dict[str, Any]) -> dict[str, Any]:
        end = m["bar_end_ms"]
        m["bar_end_ms"] = f"RAW:{end}.0"
        return {"bar_end_ms": end}

    c.edit("bar_end_ms: integral float", integral_float)
    if kind == "predictions":
        ok_probs = {"p_down": 0.2, "p_flat": 0.5, "p_up": 0.3, "signal": 0.1}
        for f in ("p_down", "p_flat", "p_up", "signal", "latency_ms"):
            number(c, f, "a number or null")
        c.ok("latency_ms: null", {"latency_ms": None}, latency_ms=None)
        c.ok("latency_ms: NaN (stored as NaN)", None, latency_ms="RAW:NaN")
        for f in ("p_up", "signal"):
            c.bad(f"status ok, {f} null", f"status ok needs numbers in {f} (got null or NaN)",
                  **{f: None})  # fmt: skip
        c.bad("status ok, p_flat NaN", "status ok needs numbers in p_flat (got null or NaN)",
              p_flat="RAW:NaN")  # fmt: skip
        nulls = dict.fromkeys(ok_probs)
        c.ok("status degraded, model_tag null (stored as '')",
             {"model_tag": "", "status": "degraded", "p_up": None},
             status="degraded", model_tag=None, reason="circuit_open: 3.2 s", latency_ms=None,
             **nulls)  # fmt: skip
        c.ok("status refused", {"status": "refused", "reason": "not_ready"}, status="refused",
             reason="not_ready", **nulls)  # fmt: skip
        c.bad("status refused with probabilities",
              "status refused must have null p_down, p_flat, p_up, signal", status="refused",
              reason="not_ready")  # fmt: skip
        c.bad("status degraded, signal NaN", "status degraded must have null signal",
              status="degraded", p_down=None, p_flat=None, p_up=None, signal="RAW:NaN")  # fmt: skip
        choice(c, "status", PREDICTION_STATUSES)
        c.bad("model_tag: number", "model_tag: expected a string or null", model_tag=5)
        c.bad("model_tag: control character", "model_tag: control characters are not allowed",
              model_tag="m\x01")  # fmt: skip
        c.bad("model_tag: 257 characters", "model_tag: longer than 256 characters",
              model_tag="m" * 257)  # fmt: skip
        c.ok("model_tag: empty string", {"model_tag": ""}, model_tag="")
        c.bad("reason: number", "reason: expected a string or null", reason=5)
        c.bad("reason: array", "reason: expected a string or null", reason=["x"])
        c.bad("reason: lone surrogate", "reason: not valid Unicode (a lone surrogate)",
              reason='RAW:"x\\udfff"')  # fmt: skip
        long_reason = "circuit_open: " + "x" * 70_000 + " é€🚀"
        c.ok("reason: 70,000 characters of free text", {"reason": long_reason},
             status="refused", reason=long_reason, **nulls)  # fmt: skip
        c.ok("reason: control characters in free text", {"reason": "a\x00b\nc\x1b"},
             status="refused", reason="a\x00b\nc\x1b", **nulls)  # fmt: skip
        integer(c, "predicted_at_ms", DT)
        c.bad("predicted_at_ms: -1", f"predicted_at_ms: out of range for {DT}", predicted_at_ms=-1)
        c.ok("predicted_at_ms: 0 (unknown: no freshness row)", {"predicted_at_ms": 0},
             predicted_at_ms=0)  # fmt: skip
    if kind in ("orders", "fills"):
        choice(c, "side", SIDES)
    if kind == "orders":
        for f in ("qty", "decision_price"):
            number(c, f)
        number_ok(c, "qty")
        choice(c, "reason", ORDER_REASONS)
        choice(c, "status", ORDER_STATUSES)
        number(c, "signal", "a number or null")
        c.ok("signal: null", {"signal": None}, signal=None)
        c.ok("signal: NaN (stored as NaN)", None, signal="RAW:NaN")
        c.ok("rejected order", {"status": "rejected", "reason": "insufficient_cash"},
             status="rejected", reason="insufficient_cash")  # fmt: skip
    if kind == "fills":
        for f in ("qty", "price", "fee", "position_after", "avg_entry_after", "realized_pnl",
                  "cash_after"):  # fmt: skip
            number(c, f)
        number_ok(c, "price")
    if kind == "equity":
        for f in ("cash", "equity", "gross", "realized_pnl", "fees_paid"):
            number(c, f)
        number_ok(c, "equity")
        flag(c, "killed")
        c.ok("killed: true", {"killed": True}, killed=True)
        integer(c, "degraded", U32)
        oor32 = f"degraded: out of range for {U32}"
        c.bad("degraded: -1", oor32, degraded=-1)
        c.bad("degraded: 2**32", oor32, degraded=2**32)
        c.ok("degraded: 2**32 - 1", {"degraded": 2**32 - 1}, degraded=2**32 - 1)
        c.ok("degraded: 4.0 (an integral float)", {"degraded": 4}, degraded=4.0)
    return c


def main() -> None:
    topics = [candles(), features()]
    tb = trading_bases()
    topics += [trading(k, tb[k][0]) for k in ("predictions", "orders", "fills", "equity")]
    for c in topics:
        path = c.write()
        n_ok = sum(x["expect"] == "ok" for x in c.cases)
        print(f"{path.name}: {len(c.cases)} cases ({n_ok} ok, {len(c.cases) - n_ok} dlq), "
              f"{path.stat().st_size:,} bytes")  # fmt: skip


if __name__ == "__main__":
    main()
