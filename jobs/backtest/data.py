"""A backtest's data in and out: the real 1m kline file, and the run's topics once written.

:func:`load_klines` reads a kline CSV(.gz)/parquet (``ts_ms`` = bar open time, the
:data:`KLINE_COLUMNS`), keeps the asked symbols and time range, and fills ``vwap`` with
``(h + l + c) / 3`` where the file has none. :func:`end_offsets` finds where a topic ends
by reading it (Tansu's ListOffsets would cut a bounded job's tail); :func:`read_topic`
reads a finished topic whole, for the report.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from jobs.backtest.config import ms

KLINE_COLUMNS = ("ts_ms", "symbol", "open", "high", "low", "close", "volume")


def load_klines(
    path: Path, symbols: tuple[str, ...], lo: pd.Timestamp, hi: pd.Timestamp
) -> pd.DataFrame:
    """Real 1m klines (``ts_ms`` = bar open time) of ``symbols`` with ``lo <= open < hi``."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such data file")
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    missing = [c for c in KLINE_COLUMNS if c not in df]
    if missing:
        raise ValueError(
            f"{path}: not a kline file (columns {missing} missing; want {list(KLINE_COLUMNS)})"
        )
    if symbols:
        unknown = sorted(set(symbols) - set(df["symbol"].unique()))
        if unknown:
            raise ValueError(f"{path}: no klines for {unknown}")
        df = df[df["symbol"].isin(symbols)]
    df = df[(df["ts_ms"] >= ms(lo)) & (df["ts_ms"] < ms(hi))]
    if df.empty:
        raise ValueError(f"{path}: no klines between {lo} and {hi}")
    df = df.sort_values(["ts_ms", "symbol"], kind="stable").reset_index(drop=True)
    if "vwap" not in df:
        df["vwap"] = (df["high"] + df["low"] + df["close"]) / 3
    return df


def end_offsets(
    bootstrap: str, topic: str, expected: int | None = None, timeout_s: float = 60.0
) -> dict[int, int]:
    """Offset after the last record, per partition, found by reading the topic: Tansu's
    ListOffsets answers the last batch's base offset + 1 (../shared/FEASIBILITY.md), which
    would cut a bounded job's tail. With ``expected``, read until that many records."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=8 << 20
    )
    try:
        parts = c.partitions_for_topic(topic) or {0}
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        ends = {tp.partition: 0 for tp in tps}
        n = 0
        deadline = time.monotonic() + timeout_s
        idle_since = time.monotonic()
        while True:
            batch = c.poll(timeout_ms=500, max_records=10_000)
            for tp, recs in batch.items():
                n += len(recs)
                ends[tp.partition] = max(ends[tp.partition], recs[-1].offset + 1)
            now = time.monotonic()
            if batch:
                idle_since = now
            if expected is not None and n >= expected:
                return ends
            if expected is None and now - idle_since > 2.0:
                return ends
            if now > deadline:
                raise RuntimeError(
                    f"{topic}: {n} records after {timeout_s:.0f} s, expected {expected}"
                )
    finally:
        c.close()


def read_topic(bootstrap: str, topic: str) -> pd.DataFrame:
    """Every record of a (finished) topic, as a frame."""
    from infra.kafka import read_all

    return pd.DataFrame(read_all(bootstrap, topic, idle_timeout_s=2))
