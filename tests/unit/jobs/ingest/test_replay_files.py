"""Reading trades files for ``ingest replay`` (no broker): every row of the bad-input files in
tests/data/replay/ comes out with its line number, its text and the verdict the case lists of
``tests/replay_cases.py`` expect; whole-file problems raise FileError; typed inputs are
never truncated."""

from __future__ import annotations

import gzip
import json
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from infra.settings import SHARED_DATA
from jobs.ingest.replay import (
    NOT_OBJECT,
    TRUNCATED,
    FileError,
    FileRow,
    TradeFile,
    load_trades,
    repeated_messages,
    to_messages,
)
from jobs.ingest.schema import InvalidTrade, format_decimal, validate
from tests import replay_cases as rc

CASE_FILES = {
    "bad_trades.csv": (rc.CSV_CASES, 2),  # (cases, line of the first case)
    "bad_trades.csv.gz": (rc.CSVGZ_CASES, 2),
    "bad_trades.jsonl": (rc.JSONL_CASES, 1),
    "bad_trades.jsonl.gz": (rc.JSONLGZ_CASES, 1),
}


def verdict(row: FileRow) -> str | None:
    """None for a good row, else the reason its dead letter carries (as TradeSink.check)."""
    if row.fields is None:
        return row.reason
    try:
        validate(row.fields)
    except InvalidTrade as e:
        return e.reason
    except Exception as e:
        return f"validator error ({type(e).__name__})"
    return None


def test_committed_files_are_the_case_lists() -> None:
    for name, data in rc.files().items():
        committed = (rc.DATA / name).read_bytes()
        if name in rc.GZ_CONTENT:
            assert gzip.decompress(committed) == data, name
        elif name.startswith("truncated."):
            full = rc._truncated_text(name.split(".")[1])
            with pytest.raises(EOFError):
                gzip.decompress(committed)
            got = rc.recoverable(committed)
            assert 0 < len(got) < len(full) and full.startswith(got), name
        else:
            assert committed == data, f"{name}: run python -m tests.replay_cases"


def test_good_rows_are_real_trades() -> None:
    df = pd.read_parquet(SHARED_DATA / "binance_trades_sample.parquet")
    real = {(r.symbol, r.trade_id): r for r in df.itertuples(index=False)}
    goods = [c.good for cases, _ in CASE_FILES.values() for c in cases if c.good]
    assert len(goods) >= 12
    for g in goods:
        r = real[(g["symbol"], g["trade_id"])]
        assert (r.ts_ms, r.side) == (g["ts_ms"], g["side"]), g
        assert Decimal(g["price"]) == Decimal(format_decimal(r.price)), g
        assert Decimal(g["qty"]) == Decimal(format_decimal(r.qty)), g


@pytest.mark.parametrize("name", sorted(CASE_FILES))
def test_every_row_its_line_text_and_verdict(name: str) -> None:
    cases, first = CASE_FILES[name]
    f = TradeFile.open(rc.DATA / name)
    rows = list(f.rows())
    want = [(line, c) for line, c in rc.numbered(cases, first) if not c.blank]
    assert [r.line for r in rows] == [line for line, _ in want]
    assert f.blank_lines == sum(c.blank for c in cases) and f.read_error is None
    for row, (line, c) in zip(rows, want, strict=True):
        assert row.text == rc.payload(c.raw, first=line == 1), (line, c.what)
        if c.good is not None:
            assert verdict(row) is None, (line, c.what)
            assert validate(row.fields).to_json() == c.good, (line, c.what)
        else:
            assert verdict(row) == rc.expected_reason(c), (line, c.what)
            if c.fields is not None:  # what the reader hands the validator
                assert row.fields == c.fields, (line, c.what)


def test_decimal_text_is_kept_exactly() -> None:
    (row,) = TradeFile.open(rc.DATA / "bad_trades.csv").rows(limit=1)
    assert (row.fields or {})["price"] == "28145.10000000"
    assert validate(row.fields).price == "28145.10000000"
    (row,) = TradeFile.open(rc.DATA / "bad_trades.jsonl").rows(limit=1)  # JSON numbers
    assert validate(row.fields).to_json()["qty"] == "0.00200000"


@pytest.mark.parametrize("name", ["truncated.csv.gz", "truncated.jsonl.gz"])
def test_truncated_gzip_sends_what_it_can_and_dead_letters_the_tail(name: str) -> None:
    got = rc.recoverable((rc.DATA / name).read_bytes())
    *complete, fragment = got.split(b"\n")
    assert fragment  # cut mid-line
    f = TradeFile.open(rc.DATA / name)
    rows = list(f.rows())
    header = name.endswith(".csv.gz")
    good, tail = rows[:-1], rows[-1]
    assert len(good) == len(complete) - header
    assert all(verdict(r) is None for r in good)
    assert [r.text for r in good] == [c.decode() for c in complete[header:]]
    assert (tail.line, tail.reason, tail.text) == (len(complete) + 1, TRUNCATED, fragment.decode())
    assert f.read_error and "EOFError" in f.read_error


def test_whole_file_problems_raise_file_error(tmp_path: Path) -> None:
    with pytest.raises(FileError, match=r"lacks required columns \['qty', 'trade_id'\]"):
        TradeFile.open(rc.DATA / "missing_columns.csv")
    with pytest.raises(FileError, match="Not a gzipped file"):
        TradeFile.open(rc.DATA / "not_gzip.jsonl.gz")
    odd = tmp_path / "trades.txt"
    odd.write_text("x")
    with pytest.raises(FileError, match="unsupported trades file"):
        TradeFile.open(odd)
    dup = tmp_path / "dup.csv"
    dup.write_text("ts_ms,symbol,price,qty,side,trade_id,price\n")
    with pytest.raises(FileError, match="repeats columns"):
        TradeFile.open(dup)
    bad_header = tmp_path / "bad_header.csv"
    bad_header.write_bytes(b"ts_ms,symbol,pr\xffice,qty,side,trade_id\n")
    with pytest.raises(FileError, match="not valid UTF-8"):
        TradeFile.open(bad_header)
    broken = tmp_path / "broken_XRP_ETH-trades.json"
    broken.write_text("[[1570752011620,")
    with pytest.raises(FileError, match="freqtrade"):
        TradeFile.open(broken)
    nosym = tmp_path / "trades.json"
    nosym.write_text("[]")
    with pytest.raises(FileError, match="symbol"):
        TradeFile.open(nosym)
    notpq = tmp_path / "x.parquet"
    notpq.write_text("not parquet")
    with pytest.raises(FileError, match="parquet"):
        TradeFile.open(notpq)


def test_empty_files_have_no_rows() -> None:
    for name, blanks in (("empty.csv", 0), ("empty.jsonl.gz", 0), ("blank_only.jsonl", 3)):
        f = TradeFile.open(rc.DATA / name)
        assert list(f.rows()) == [] and f.blank_lines == blanks, name


def test_header_after_blank_lines_and_extra_columns(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_bytes(
        b"\n\r\n exchange , ts_ms,symbol,price,qty,side,trade_id,cost\n"
        b"kraken,1723161255342,BTCUSDT,61837.63,0.02,sell,3735683259,1236.75\n"
    )
    (row,) = TradeFile.open(p).rows()
    assert row.line == 4
    assert validate(row.fields).exchange == "kraken"


def test_typed_parquet_never_truncates(tmp_path: Path) -> None:
    p = tmp_path / "typed.parquet"
    ts = [1680652700452.0, 1721347022707.5, None, float("nan"), 1680652700452.0, 1680652700452.0]
    pq.write_table(
        pa.table(
            {
                "ts_ms": pa.array(ts),
                "symbol": ["BTCUSDT"] * 6,
                "price": pa.array([28145.1, 1.0, 1.0, 1.0, None, float("inf")]),
                "qty": [0.00001, 1.0, 1.0, 1.0, 1.0, 1.0],
                "side": ["buy"] * 6,
                "trade_id": pa.array([1.0, 2.0, 3.0, 4.0, 5.0, 1.5]),
            }
        ),
        p,
    )
    rows = list(TradeFile.open(p).rows())
    assert [r.line for r in rows] == [1, 2, 3, 4, 5, 6]
    assert validate(rows[0].fields).to_json() == {
        "ts_ms": 1680652700452,
        "symbol": "BTCUSDT",
        "price": "28145.1",
        "qty": "0.00001",
        "side": "buy",
        "trade_id": 1,
        "exchange": "binance",
    }
    assert [(r.fields or {})["ts_ms"] for r in rows[1:4]] == ["1721347022707.5", None, "nan"]
    assert [verdict(r) for r in rows[1:]] == [
        "ts_ms is not an integer",
        "missing field ts_ms",
        "ts_ms is not an integer",
        "missing field price",
        verdict(FileRow(0, "", {**(rows[5].fields or {})})),  # price 'inf'
    ]
    assert (rows[5].fields or {})["trade_id"] == "1.5" and verdict(rows[5]) is not None
    assert json.loads(rows[1].text)["ts_ms"] == 1721347022707.5  # payload: the typed values


def test_freqtrade_rows(tmp_path: Path) -> None:
    p = tmp_path / "x_XRP_ETH-trades.json"
    rows_in = [
        [1570752011620, "13519807", None, "sell", 0.00141342, 23.0, 0.0325],
        [1570752011620, 1.5, None, "sell", 0.1, 1.0, 0.1],
        [1],
        "x",
        [1570752011620.5, "5", None, "buy", 0.1, 1.0, 0.1],
    ]
    p.write_text(json.dumps(rows_in))
    rows = list(TradeFile.open(p).rows())
    assert validate(rows[0].fields).to_json() == {
        "ts_ms": 1570752011620,
        "symbol": "XRPETH",
        "price": "0.00141342",
        "qty": "23",
        "side": "sell",
        "trade_id": 13519807,
        "exchange": "binance",
    }
    assert [verdict(r) for r in rows[1:]] == [
        "trade_id is not a non-negative integer",
        "wrong number of fields",
        "wrong number of fields",
        "ts_ms is not an integer",
    ]
    assert [r.text for r in rows[2:4]] == ["[1]", '"x"']


@pytest.mark.parametrize(
    "name", ["binance_trades_sample.parquet", "freqtrade_XRP_ETH-trades.json.gz"]
)
def test_real_typed_files_read_as_before(name: str) -> None:
    """The sample files become the same messages as the DataFrame path (to_messages)."""
    n = 20_000
    f = TradeFile.open(SHARED_DATA / name)
    got = [validate(r.fields).to_json() for r in f.rows(limit=n)]
    want = [validate(m).to_json() for m in to_messages(load_trades(f.path).head(n))]
    assert got == want and len(got) == min(n, f.total or 0)


def test_jsonl_not_an_object_and_limit(tmp_path: Path) -> None:
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n[1]\n{"b": NaN}\n{"c": 1}\n')
    rows = list(TradeFile.open(p).rows(limit=3))
    assert [r.reason for r in rows] == [None, NOT_OBJECT, NOT_OBJECT]
    assert verdict(rows[0]) == "missing field ts_ms"


def test_dataframe_path_never_truncates() -> None:
    df = pd.DataFrame(
        {
            "ts_ms": [1_700_000_000_000.0, 1_700_000_000_000.5, float("nan")],
            "symbol": ["BTCUSDT"] * 3,
            "price": [1.5, 2.25, 3.0],
            "qty": [0.1, 3.0, 1.0],
            "side": ["buy", "sell", "buy"],
            "trade_id": [5.0, 1.5, 7.0],
            "exchange": ["binance"] * 3,
        }
    )
    msgs = list(to_messages(df))
    assert [(m["ts_ms"], m["trade_id"]) for m in msgs] == [
        (1_700_000_000_000, 5),
        ("1700000000000.5", "1.5"),
        (None, 7),
    ]
    with pytest.raises(InvalidTrade, match="ts_ms is not an integer"):
        validate(msgs[1])
    shifted = list(repeated_messages(df, 2))
    assert shifted[4]["ts_ms"] == "1700000000000.5" and shifted[3]["trade_id"] == 5 + 8
