"""Trades as pandas DataFrames and wire messages, for tests, benchmarks and the demo on the
clean sample files: :func:`load_trades` reads a parquet / freqtrade / CSV / JSONL file into
the wire columns, :func:`to_messages` turns its rows into wire messages (floats as exact
shortest decimal text, integral integer fields as ints, others as text so validation rejects
them), and :func:`repeated_messages` repeats the file in non-overlapping passes earlier in
event time with shifted trade ids. ``candleflow ingest replay`` itself reads files with
:class:`jobs.ingest.files.TradeFile`.
"""

from __future__ import annotations

import gzip
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jobs.ingest.schema import format_decimal


def load_trades(path: Path) -> pd.DataFrame:
    """Load a trades file into columns ts_ms, symbol, price, qty, side, trade_id, exchange.

    Supported: the parquet layout of ``binance_trades_sample.parquet``, freqtrade's
    ``*-trades.json(.gz)`` (rows ``[ts_ms, id, order, side, price, amount, cost]``; the
    symbol comes from the file name, e.g. ``..._XRP_ETH-trades`` -> ``XRPETH``), and CSV/JSONL
    with the wire columns.
    """
    name = path.name
    if name.endswith(".parquet"):
        df = pd.read_parquet(path)
    elif name.endswith((".json.gz", ".json")) and "trades" in name:
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt") as f:
            rows = json.load(f)
        df = pd.DataFrame(
            rows, columns=["ts_ms", "trade_id", "order", "side", "price", "qty", "cost"]
        )
        base, quote = name.split("-trades")[0].split("_")[-2:]  # ..._XRP_ETH-trades
        df["symbol"] = (base + quote).upper()
    elif name.endswith((".jsonl", ".jsonl.gz")):
        df = pd.read_json(path, lines=True, dtype=False)
    elif name.endswith((".csv", ".csv.gz")):
        df = pd.read_csv(path)
    else:
        raise ValueError(f"unsupported trades file: {path}")
    if "exchange" not in df:
        df["exchange"] = "binance"
    missing = {"ts_ms", "symbol", "price", "qty", "side", "trade_id"} - set(df.columns)
    if missing:
        raise ValueError(f"{path}: missing columns {sorted(missing)}")
    return df[["ts_ms", "symbol", "price", "qty", "side", "trade_id", "exchange"]]


def _int_or_text(v: Any) -> Any:
    """An integer column's value: an int when it is integral, else its text (never truncated)."""
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, int | np.integer):
        return int(v)
    if isinstance(v, float | np.floating):
        f = float(v)
        if math.isnan(f):
            return None
        return int(f) if f.is_integer() else format_decimal(f)
    return v


def to_messages(df: pd.DataFrame) -> Iterator[dict[str, Any]]:
    """Rows as wire messages; float prices become exact shortest decimal strings; integer
    columns stay ints when integral and become text otherwise (so validation rejects them)."""
    for ts, sym, price, qty, side, tid, exch in df.itertuples(index=False, name=None):
        yield {
            "ts_ms": _int_or_text(ts),
            "symbol": sym,
            "price": format_decimal(price) if isinstance(price, float) else price,
            "qty": format_decimal(qty) if isinstance(qty, float) else qty,
            "side": side,
            "trade_id": _int_or_text(tid),
            "exchange": exch,
        }


def repeated_messages(df: pd.DataFrame, repeat: int = 1) -> Iterator[dict[str, Any]]:
    """The file's messages ``repeat`` times, passes in event-time order and never overlapping:
    pass k is shifted by (k - repeat + 1) x (span rounded up to whole hours + 1 h), so the
    last pass keeps the file's own times and earlier passes lie before it (forward shifts
    would put historical data in the future, which validation rejects); trade ids of pass k
    are shifted forward by k x (max id + 1). Integer fields that are not integers are passed
    on unshifted (validation rejects them)."""
    if df.empty:
        return
    hour = 3_600_000
    ts = pd.to_numeric(df["ts_ms"], errors="coerce")
    ids = pd.to_numeric(df["trade_id"], errors="coerce")
    span = int(ts.max() - ts.min()) if ts.notna().any() else 0
    shift_ms = (span // hour + 2) * hour
    id_shift = int(ids.max()) + 1 if ids.notna().any() else 0
    for k in range(repeat):
        back = repeat - 1 - k
        for m in to_messages(df):
            if back and type(m["ts_ms"]) is int:
                m["ts_ms"] -= back * shift_ms
            if k and type(m["trade_id"]) is int:
                m["trade_id"] += k * id_shift
            yield m
