"""The bad-input files of ``tests/data/replay/`` and what ``ingest replay`` must make of every
row in them.

The case lists below *are* the files: ``python -m tests.replay_cases`` rewrites them, and
``tests/unit/jobs/ingest/test_replay_files.py`` checks that the committed files are exactly
what these lists build. Every good row is a real trade from ``binance_trades_sample.parquet``
(checked against it), some with zero-padded decimals as Binance's REST API writes them. A bad row's
expected reason is either written here (the reader's own reasons and the validator's stable
ones) or ``None``: then it is whatever :func:`jobs.ingest.schema.validate` says about
``fields``, the texts the reader must hand it, so the tests follow the validator's rules.
"""

from __future__ import annotations

import gzip
import json
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobs.ingest.schema import InvalidTrade, validate

DATA = Path(__file__).parent / "data" / "replay"
WIRE = ("ts_ms", "symbol", "price", "qty", "side", "trade_id", "exchange")


@dataclass(frozen=True)
class Case:
    raw: bytes  # the record's bytes in the file, with its line break(s)
    good: dict[str, Any] | None = None  # the wire message it must become
    reason: str | None = None  # a bad row: its reason, when stable enough to write down
    fields: dict[str, Any] | None = None  # a bad row: what the reader hands the validator
    blank: bool = False  # skipped and counted, not a row
    what: str = ""

    @property
    def bad(self) -> bool:
        return self.good is None and not self.blank


def expected_reason(case: Case) -> str:
    """The reason the DLQ record must carry (the sink turns a validator crash into
    ``validator error (<exception>)``)."""
    if case.reason is not None:
        return case.reason
    assert case.fields is not None, case
    try:
        validate(case.fields)
    except InvalidTrade as e:
        return e.reason
    except Exception as e:
        return f"validator error ({type(e).__name__})"
    raise AssertionError(f"validator accepts {case.fields} ({case.what})")


def payload(raw: bytes, first: bool = False) -> str:
    """The DLQ payload of a row: its text without the final line break, bad bytes as \\xNN."""
    if first:
        raw = raw.removeprefix(b"\xef\xbb\xbf")
    if raw.endswith(b"\r\n"):
        raw = raw[:-2]
    elif raw.endswith((b"\n", b"\r")):
        raw = raw[:-1]
    return raw.decode("utf-8", "backslashreplace")


def numbered(cases: list[Case], first_line: int = 1) -> list[tuple[int, Case]]:
    """(line the record starts on, case) for every case of a file."""
    out, line = [], first_line
    for c in cases:
        out.append((line, c))
        line += c.raw.count(b"\n")
    return out


def wire(ts: str, sym: str, price: str, qty: str, side: str, tid: str, exch: str = "binance"):
    return {
        "ts_ms": int(ts),
        "symbol": sym,
        "price": price,
        "qty": qty,
        "side": side,
        "trade_id": int(tid),
        "exchange": exch,
    }


# ---------------------------------------------------------------------------------- CSV
CSV_HEADER = b"\xef\xbb\xbfts_ms,symbol,price,qty,side,trade_id,exchange\r\n"  # BOM + CRLF
CSV_COLUMNS = list(WIRE)


def _cells(raw: bytes) -> list[bytes]:
    return raw.rstrip(b"\r\n").split(b",")


def csv_good(*cells: str, eol: bytes = b"\r\n", quoted: bool = False, what: str = "") -> Case:
    text = ",".join(f'"{c}"' if quoted else c for c in cells)
    return Case(text.encode() + eol, good=wire(*cells), what=what or "real trade")


def csv_bad(
    line: bytes, reason: str | None = None, fields: dict[str, Any] | None = None, what: str = ""
) -> Case:
    if reason is None and fields is None:  # plain cells: the reader hands them over as text
        fields = {k: (v.decode() or None) for k, v in zip(CSV_COLUMNS, _cells(line), strict=True)}
    return Case(line, reason=reason, fields=fields, what=what)


BTC_UM = ("1680652700452", "BTCUSDT.UM")
ETH_UM = ("1721347022707", "ETHUSDT.UM")

# fmt: off
CSV_CASES: list[Case] = [
    csv_good(*BTC_UM, "28145.10000000", "0.00200000", "sell", "3535186032", "binance",
             what="real trade, zero-padded decimals (kept as written)"),
    csv_good("1680652700452", "BTCUSDT.UM", "28145.1", "0.02", "sell", "3535186033", "binance"),
    csv_good(*ETH_UM, "3424.98", "0.007", "sell", "4217896584", "binance", quoted=True,
             what="real trade, every field quoted"),
    csv_good("1721347023064", "ETHUSDT.UM", "3424.98", "0.003", "sell", "4217896585", "binance",
             eol=b"\n", what="real trade, LF line end among CRLF ones"),
    csv_bad(b"1680652700452,BTCUSDT.UM,28145.1,0.02,sell,,binance\r\n", "missing field trade_id",
            what="empty trade_id cell"),
    csv_bad(b",BTCUSDT.UM,28145.1,0.008,sell,3535186035,binance\r\n", "missing field ts_ms",
            what="empty ts_ms cell"),
    Case(b"\r\n", blank=True, what="blank line (CRLF)"),
    csv_bad(b"yesterday,BTCUSDT.UM,28145.1,0.008,sell,3535186035,binance\r\n",
            "ts_ms is not an integer", what="text ts_ms"),
    csv_bad(b"1721347022707.5,ETHUSDT.UM,3424.98,0.087,sell,4217896586,binance\r\n",
            "ts_ms is not an integer", what="float ts_ms (not truncated)"),
    csv_bad(b"1.721347022707e12,ETHUSDT.UM,3424.98,0.087,sell,4217896586,binance\r\n",
            "ts_ms is not an integer", what="ts_ms in exponent notation"),
    csv_bad(b"1721347023151,ETHUSDT.UM,3424.98,0.087,sell,1.5,binance\r\n",
            what="float trade_id 1.5 (not truncated)"),
    csv_bad(b"1721347023151,ETHUSDT.UM,3424.98,0.087,sell,4217896586.0,binance\r\n",
            what="integral float trade_id text"),
    csv_bad(b"1234567890123456789012345678901234567890,ETHUSDT.UM,3424.98,0.087,sell,"
            b"4217896586,binance\r\n", what="40-digit ts_ms"),
    csv_bad(b"1721347023151,ETHUSDT.UM,3424.98,0.087,sell,"
            b"1234567890123456789012345678901234567890,binance\r\n",
            what="40-digit trade_id"),
    csv_bad(b"1721347023151,ETHUSDT.UM,NaN,0.087,sell,4217896586,binance\r\n", what="NaN price"),
    csv_bad(b"1721347023151,ETHUSDT.UM,3424.98,Infinity,sell,4217896586,binance\r\n",
            what="Infinity qty"),
    csv_bad(b"1721347023151,ETHUSDT.UM,3424.98,0.087,sell,NA,binance\r\n",
            what="'NA' trade_id (text, not pandas' missing)"),
    csv_bad(b"null,ETHUSDT.UM,3424.98,0.087,sell,4217896586,binance\r\n",
            "ts_ms is not an integer", what="'null' ts_ms"),
    csv_bad(b'1723161255342,BTCUSDT,"61,837.63",0.02,sell,3735683259,binance\r\n',
            fields={"ts_ms": "1723161255342", "symbol": "BTCUSDT", "price": "61,837.63",
                    "qty": "0.02", "side": "sell", "trade_id": "3735683259",
                    "exchange": "binance"},
            what="quoted price with a thousands comma"),
    csv_bad(b'1723161255617,"BTC\r\nUSDT",61837.63,0.048,sell,3735683260,binance\r\n',
            fields={"ts_ms": "1723161255617", "symbol": "BTC\r\nUSDT", "price": "61837.63",
                    "qty": "0.048", "side": "sell", "trade_id": "3735683260",
                    "exchange": "binance"},
            what="quoted symbol with a line break (one record on two lines)"),
    csv_good("1723161255617", "BTCUSDT", "61837.63", "0.00009", "sell", "3735683261", "binance",
             what="real trade after a two-line record"),
    csv_bad(b"1723161255617,BTCUSDT,61837.63,0.00009,sell,3735683262,binance,extra\r\n",
            "wrong number of fields", what="extra field"),
    csv_bad(b"1723161255611,ETHUSDT,2683.8,0.002,sell,1520538925\r\n", "wrong number of fields",
            what="missing field (6 of 7)"),
    Case(b" \t \r\n", blank=True, what="whitespace-only line"),
    csv_bad(b"1723161255611,ETH\xffUSDT,2683.8,0.0345,sell,1520538926,binance\r\n",
            "not valid UTF-8", what="non-UTF-8 byte"),
    csv_bad(b"1723161255611,ETHUSDT,2683.8,0.002,sell,1520538927,b\xe9nance\r\n",
            "not valid UTF-8", what="Latin-1 text"),
    csv_bad(b"1723161255611,ETH\rUSDT,2683.8,0.0006,sell,1520538928,binance\r\n",
            "malformed CSV row", what="bare CR inside an unquoted field"),
    csv_bad(b"1723161255611,ETHUSDT,2683.8,-0.0006,sell,1520538928,binance\r\n",
            what="negative qty"),
    csv_bad(b"1723161255611,ETHUSDT,2683.8,0.0006,BUY,1520538928,binance\r\n",
            what="side in upper case"),
    csv_bad(b"1723161255611,ETHUSDT,2683.8,0.0006,sell,1520538928,Binance Spot\r\n",
            what="exchange with a space and capitals"),
    csv_bad(b",,,,,,\r\n", "missing field ts_ms", what="all cells empty"),
    csv_bad(b"1723161255611,ETHUSDT,2683.80000000,0.000600001,sell,1520538928,binance\r\n",
            what="qty with 9 decimals"),
    Case(b"\n", blank=True, what="blank line (LF)"),
    csv_good("1723161257679", "BTCUSD_PERP.CM", "61804.80000000", "4", "buy", "849714402",
             "binance", what="real COIN-M trade, zero-padded price"),
    csv_bad(b'1723161258748,BTCUSD_PERP.CM,61804.8,1,buy,849714403,"binance\r\n',
            "unterminated quoted field",
            what="the file ends inside a quoted field (no closing quote)"),
]
# fmt: on

# gzip'd CSV: another column order, an extra column, no exchange column (-> binance), LF
CSVGZ_HEADER = b"trade_id,ts_ms,symbol,side,price,qty,cost\n"
_GZ_COLS = ["trade_id", "ts_ms", "symbol", "side", "price", "qty", "cost"]


def gz_good(tid: str, ts: str, sym: str, side: str, price: str, qty: str, what: str = "") -> Case:
    raw = ",".join([tid, ts, sym, side, price, qty, "0"]).encode() + b"\n"
    return Case(raw, good=wire(ts, sym, price, qty, side, tid), what=what or "real trade")


def gz_bad(line: bytes, reason: str | None = None, what: str = "") -> Case:
    cells = dict(zip(_GZ_COLS, _cells(line), strict=True)) if reason is None else {}
    fields = {k: (cells[k].decode() or None) for k in WIRE if k in cells} if cells else None
    if fields is not None:
        fields["exchange"] = "binance"
    return Case(line, reason=reason, fields=fields, what=what)


# fmt: off
CSVGZ_CASES: list[Case] = [
    gz_good("849714404", "1723161258748", "BTCUSD_PERP.CM", "buy", "61804.8", "5"),
    gz_good("121451470284048", "1737918794873", "BTCUSD.HL", "buy", "105056.00000000",
            "0.00219000", what="real Hyperliquid trade, zero-padded"),
    gz_bad(b",1737918796007,BTCUSD.HL,buy,105056,0.00015,0\n", "missing field trade_id",
           what="empty trade_id cell"),
    gz_bad(b"588047386913648,,BTCUSD.HL,buy,105056,0.00015,0\n", "missing field ts_ms",
           what="empty ts_ms cell"),
    gz_bad(b"588047386913648,1737918796007,BTCUSD.HL,buy,1e5,0.00015,0\n",
           what="price in exponent notation"),
    gz_bad(b"588047386913648,1737918796007,BTCUSD.HL,buy,105056,0.00015\n",
           "wrong number of fields", what="missing cost cell"),
    Case(b"\n", blank=True, what="blank line"),
    gz_good("85392298469503", "1737918796079", "BTCUSD.HL", "sell", "105055", "0.00219"),
]
# fmt: on

# ---------------------------------------------------------------------------------- JSONL
_T = b'"ts_ms":1723161258762,"symbol":"ETHUSD_PERP.CM","side":"buy","exchange":"binance"'


def jl_bad(line: bytes, reason: str | None = None, what: str = "", **fields: Any) -> Case:
    base = {
        "ts_ms": "1723161258762",
        "symbol": "ETHUSD_PERP.CM",
        "side": "buy",
        "exchange": "binance",
        "price": "2682.18",
        "qty": "1",
        "trade_id": "805376266",
    }
    return Case(line, reason=reason, fields=None if reason else {**base, **fields}, what=what)


# fmt: off
JSONL_CASES: list[Case] = [
    Case(b'\xef\xbb\xbf{"ts_ms":1680652700452,"symbol":"BTCUSDT.UM","price":28145.10000000,'
         b'"qty":0.00200000,"side":"sell","trade_id":3535186032,"exchange":"binance"}\n',
         good=wire(*BTC_UM, "28145.10000000", "0.00200000", "sell", "3535186032"),
         what="BOM, JSON numbers with trailing zeros (kept as written)"),
    Case(b'{"ts_ms":"1721347022707","symbol":"ETHUSDT.UM","price":"3424.98000000",'
         b'"qty":"0.00700000","side":"sell","trade_id":"4217896584","exchange":"binance"}\r\n',
         good=wire(*ETH_UM, "3424.98000000", "0.00700000", "sell", "4217896584"),
         what="every value a string, CRLF"),
    Case(b'{ "trade_id": 1520538925, "E": 1723161255612, "m": true, "side": "sell",\t'
         b'"qty": "0.002", "price": "2683.8", "symbol": "ETHUSDT", "ts_ms": 1723161255611 }\n',
         good=wire("1723161255611", "ETHUSDT", "2683.8", "0.002", "sell", "1520538925"),
         what="other key order, extra keys, no exchange key (-> binance)"),
    Case(b"not json\n", reason="not a JSON object", what="not JSON"),
    Case(b'{"ts_ms": 1680652700452, "symbol": "BTCUSDT.UM"\n', reason="not a JSON object",
         what="cut-off object"),
    Case(b'[1680652700452,"BTCUSDT.UM","28145.1","0.02","sell",3535186033]\n',
         reason="not a JSON object", what="JSON array line"),
    Case(b'"a string"\n', reason="not a JSON object", what="JSON string line"),
    Case(b"42\n", reason="not a JSON object", what="JSON number line"),
    Case(b"null\n", reason="not a JSON object", what="JSON null line"),
    Case(b"{" + _T + b',"price":"2682.18","qty":"1","trade_id":1}{"a":1}\n',
         reason="not a JSON object", what="two objects on one line"),
    Case(b"{" + _T + b',"price":NaN,"qty":"1","trade_id":805376266}\n',
         reason="not a JSON object", what="NaN literal (not JSON)"),
    Case(b"{" + _T + b',"price":"2682.18","qty":Infinity,"trade_id":805376266}\n',
         reason="not a JSON object", what="Infinity literal (not JSON)"),
    Case(b"{" + _T + b',"price":-Infinity,"qty":"1","trade_id":805376266}\n',
         reason="not a JSON object", what="-Infinity literal (not JSON)"),
    Case(b"\n", blank=True, what="blank line"),
    Case(b'{"ts_ms":"yesterday","symbol":"ETHUSD_PERP.CM","price":"2682.18","qty":"1",'
         b'"side":"buy","trade_id":805376266}\n', reason="ts_ms is not an integer",
         what="text ts_ms"),
    Case(b'{"ts_ms":1723161258762.5,"symbol":"ETHUSD_PERP.CM","price":"2682.18","qty":"1",'
         b'"side":"buy","trade_id":805376266}\n', reason="ts_ms is not an integer",
         what="float ts_ms (not truncated)"),
    Case(b'{"ts_ms":1.723161258762e12,"symbol":"ETHUSD_PERP.CM","price":"2682.18","qty":"1",'
         b'"side":"buy","trade_id":805376266}\n', reason="ts_ms is not an integer",
         what="ts_ms in exponent notation"),
    jl_bad(b'{"ts_ms":1234567890123456789012345678901234567890,"symbol":"ETHUSD_PERP.CM",'
           b'"price":"2682.18","qty":"1","side":"buy","trade_id":805376266}\n',
           ts_ms="1234567890123456789012345678901234567890", what="40-digit ts_ms"),
    jl_bad(b"{" + _T + b',"price":"2682.18","qty":"1",'
           b'"trade_id":1234567890123456789012345678901234567890}\n',
           trade_id="1234567890123456789012345678901234567890",
           what="40-digit trade_id"),
    jl_bad(b"{" + _T + b',"price":"2682.18","qty":"1","trade_id":1.5}\n', trade_id="1.5",
           what="float trade_id 1.5 (not truncated)"),
    jl_bad(b"{" + _T + b',"price":"2682.18","qty":"1","trade_id":805376266.0}\n',
           trade_id="805376266.0", what="integral float trade_id"),
    Case(b'{"symbol":"ETHUSD_PERP.CM","price":"2682.18","qty":"11","side":"buy",'
         b'"trade_id":805376267}\n', reason="missing field ts_ms",
         what="no ts_ms key"),
    Case(b'{"ts_ms":null,"symbol":"ETHUSD_PERP.CM","price":"2682.18","qty":"11","side":"buy",'
         b'"trade_id":805376267}\n', reason="missing field ts_ms",
         what="ts_ms null"),
    Case(b'{"time":1723161258762,"sym":"ETHUSD_PERP.CM","p":"2682.18","q":"22","id":805376268}'
         b"\n", reason="missing field ts_ms",
         what="another column set (Binance-style short keys)"),
    Case(b"{}\n", reason="missing field ts_ms", what="empty object"),
    jl_bad(b'{"ts_ms":1723161258762,"symbol":["ETHUSD_PERP.CM"],"side":"buy",'
           b'"exchange":"binance","price":"2682.18","qty":"1","trade_id":805376266}\n',
           symbol=["ETHUSD_PERP.CM"], what="symbol is an array"),
    jl_bad(b"{" + _T + b',"price":{"v":"2682.18"},"qty":"1","trade_id":805376266}\n',
           price={"v": "2682.18"}, what="price is an object"),
    jl_bad(b"{" + _T + b',"price":"2,682.18","qty":"1","trade_id":805376266}\n',
           price="2,682.18", what="price with a thousands comma"),
    jl_bad(b"{" + _T + b',"price":"","qty":"1","trade_id":805376266}\n', price="",
           what="empty price string"),
    jl_bad(b"{" + _T + b',"price":"2682.18","qty":-1,"trade_id":805376266}\n', qty="-1",
           what="negative qty"),
    jl_bad(b'{"ts_ms":1723161258762,"symbol":"ETHUSD_PERP.CM","side":"BUY","exchange":"binance",'
           b'"price":"2682.18","qty":"1","trade_id":805376266}\n', side="BUY",
           what="side in upper case"),
    jl_bad(b'{"ts_ms":1723161258762,"symbol":"ETHUSD_PERP.CM","side":"buy","exchange":5,'
           b'"price":"2682.18","qty":"1","trade_id":805376266}\n', exchange="5",
           what="exchange is a number"),
    Case(b'{"ts_ms":1723161258762,"symbol":"ETH\xffUSD_PERP.CM","price":"2682.18","qty":"1",'
         b'"side":"buy","trade_id":805376266}\n', reason="not valid UTF-8",
         what="non-UTF-8 byte"),
    Case(b'{"a":' * 3000 + b"1" + b"}" * 3000 + b"\n", reason="not a JSON object",
         what="3,000 levels of nesting"),
    jl_bad(b"{" + _T + b',"price":"2682.18","qty":"1","trade_id":' + b"7" * 4400 + b"}\n",
           trade_id="7" * 4400, what="4,400-digit trade_id"),
    Case(b"  \t\r\n", blank=True, what="whitespace-only line (CRLF)"),
    Case(b'{"ts_ms":1723161259550,"symbol":"ETHUSD_PERP.CM","price":2682.50,"qty":24,'
         b'"side":"buy","trade_id":805376269,"exchange":"binance"}',
         good=wire("1723161259550", "ETHUSD_PERP.CM", "2682.50", "24", "buy", "805376269"),
         what="last line without a line break"),
]
# fmt: on

# fmt: off
JSONLGZ_CASES: list[Case] = [
    Case(b'{"ts_ms":1723161255342,"symbol":"BTCUSDT","price":"61837.63","qty":"0.02",'
         b'"side":"sell","trade_id":3735683259}\n',
         good=wire("1723161255342", "BTCUSDT", "61837.63", "0.02", "sell", "3735683259")),
    Case(b"[]\n", reason="not a JSON object", what="empty JSON array"),
    Case(b'{"ts_ms":"","symbol":"BTCUSDT","price":"61837.63","qty":"0.048","side":"sell",'
         b'"trade_id":3735683260}\n', fields={"ts_ms": "", "symbol": "BTCUSDT",
         "price": "61837.63", "qty": "0.048", "side": "sell", "trade_id": "3735683260",
         "exchange": "binance"}, what="empty ts_ms string"),
    Case(b"\x00\x01\x02\n", reason="not a JSON object", what="control bytes"),
    Case(b'{"ts_ms":1723161255617,"symbol":"BTCUSDT","price":"61837.63","qty":"0.00009",'
         b'"side":"sell","trade_id":3735683261}\n',
         good=wire("1723161255617", "BTCUSDT", "61837.63", "0.00009", "sell", "3735683261")),
]
# fmt: on

# ------------------------------------------------------------------- whole-file problems
MISSING_COLUMNS = b"ts_ms,symbol,price,side\n1680652700452,BTCUSDT.UM,28145.1,sell\n"
TRUNCATED_ROWS = slice(20_000, 20_300)  # real rows of the sample for the truncated files


def real_rows(rows: slice) -> list[tuple[str, ...]]:
    """Rows of binance_trades_sample.parquet as wire texts (floats in shortest decimal)."""
    import pandas as pd

    from infra.settings import SHARED_DATA
    from jobs.ingest.schema import format_decimal

    df = pd.read_parquet(SHARED_DATA / "binance_trades_sample.parquet").iloc[rows]
    return [
        (
            str(r.ts_ms),
            r.symbol,
            format_decimal(r.price),
            format_decimal(r.qty),
            r.side,
            str(r.trade_id),
        )
        for r in df.itertuples(index=False)
    ]


def _truncated_text(kind: str) -> bytes:
    rows = real_rows(TRUNCATED_ROWS)
    if kind == "csv":
        return b"ts_ms,symbol,price,qty,side,trade_id\n" + b"".join(
            ",".join(r).encode() + b"\n" for r in rows
        )
    return b"".join(json.dumps(dict(zip(WIRE[:6], r, strict=True))).encode() + b"\n" for r in rows)


def recoverable(gz: bytes) -> bytes:
    """What a decompressor gets out of a (truncated) gzip file."""
    d = zlib.decompressobj(wbits=31)
    return d.decompress(gz)


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def files() -> dict[str, bytes]:
    """Every committed file of tests/data/replay/ (the .gz ones by their content)."""
    trunc_csv, trunc_jsonl = _gzip(_truncated_text("csv")), _gzip(_truncated_text("jsonl"))
    return {
        "bad_trades.csv": CSV_HEADER + b"".join(c.raw for c in CSV_CASES),
        "bad_trades.csv.gz": CSVGZ_HEADER + b"".join(c.raw for c in CSVGZ_CASES),
        "bad_trades.jsonl": b"".join(c.raw for c in JSONL_CASES),
        "bad_trades.jsonl.gz": b"".join(c.raw for c in JSONLGZ_CASES),
        "missing_columns.csv": MISSING_COLUMNS,
        "empty.csv": b"",
        "empty.jsonl.gz": b"",
        "blank_only.jsonl": b"\n  \n\r\n",
        "not_gzip.jsonl.gz": b'{"this": "is plain text"}\n',
        "truncated.csv.gz": trunc_csv[: len(trunc_csv) * 6 // 10],
        "truncated.jsonl.gz": trunc_jsonl[: len(trunc_jsonl) * 6 // 10],
    }


GZ_CONTENT = {"bad_trades.csv.gz", "bad_trades.jsonl.gz", "empty.jsonl.gz"}


def write(directory: Path = DATA) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files().items():
        (directory / name).write_bytes(_gzip(data) if name in GZ_CONTENT else data)


if __name__ == "__main__":
    write(Path(sys.argv[1]) if len(sys.argv) > 1 else DATA)
    print(f"wrote {len(files())} files to {DATA}")
