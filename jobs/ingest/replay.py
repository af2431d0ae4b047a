"""Replay recorded trades from files into the ``trades`` topic."""

from __future__ import annotations

import gzip
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from infra.settings import Settings
from jobs.ingest.schema import InvalidTrade, Trade, dlq_record, format_decimal, validate

log = logging.getLogger(__name__)


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


def to_messages(df: pd.DataFrame) -> Iterator[dict[str, Any]]:
    """Rows as wire messages; float prices become exact shortest decimal strings."""
    for ts, sym, price, qty, side, tid, exch in df.itertuples(index=False, name=None):
        yield {
            "ts_ms": int(ts),
            "symbol": sym,
            "price": format_decimal(price) if isinstance(price, float) else price,
            "qty": format_decimal(qty) if isinstance(qty, float) else qty,
            "side": side,
            "trade_id": int(tid),
            "exchange": exch,
        }


@dataclass
class Pacer:
    """Sleeps so messages go out at ``speed`` x real time; ``speed=None`` = as fast as possible.
    Gaps in event time longer than ``max_gap_ms`` are shortened to it (captures months apart)."""

    speed: float | None
    max_gap_ms: int = 60_000
    _t0: float = field(default=0.0, init=False)
    _virtual_ms: float = field(default=0.0, init=False)
    _last_ts: int | None = field(default=None, init=False)

    def wait(self, ts_ms: int) -> None:
        if self.speed is None:
            return
        if self._last_ts is None:
            self._t0 = time.monotonic()
        else:
            self._virtual_ms += min(max(ts_ms - self._last_ts, 0), self.max_gap_ms)
        self._last_ts = ts_ms
        delay = self._t0 + self._virtual_ms / 1000.0 / self.speed - time.monotonic()
        if delay > 0:
            time.sleep(delay)


@dataclass
class IngestStats:
    read: int = 0
    sent: int = 0
    dead_lettered: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def reject(self, reason: str) -> None:
        self.dead_lettered += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


class TradeSink:
    """Validates and sends trades: valid -> ``trades`` (key symbol), invalid -> DLQ."""

    def __init__(self, producer: Any, topic: str, dlq_topic: str, detected_by: str = "ingest"):
        from infra.kafka import OffsetTracker

        self.producer = producer
        self.topic = topic
        self.dlq_topic = dlq_topic
        self.detected_by = detected_by
        self.stats = IngestStats()
        self.tracker = OffsetTracker(topic)
        self.dlq_tracker = OffsetTracker(dlq_topic)

    @classmethod
    def for_settings(cls, settings: Settings, detected_by: str = "ingest") -> TradeSink:
        """A sink on the configured broker, creating the trades/DLQ topics if needed."""
        from infra.kafka import ensure_topics, make_producer

        topics = [settings.topic_trades, settings.topic_trades_dlq]
        ensure_topics(settings.kafka_bootstrap, topics, partitions=settings.topic_partitions)
        producer = make_producer(settings.kafka_bootstrap)
        return cls(producer, settings.topic_trades, settings.topic_trades_dlq, detected_by)

    def send(self, raw: str | bytes | dict[str, Any]) -> Trade | None:
        from infra.kafka import send_tracked

        self.stats.read += 1
        try:
            trade = validate(raw)
        except InvalidTrade as e:
            self.stats.reject(e.reason)
            rec = dlq_record(e.reason, e.payload, self.topic, self.detected_by)
            send_tracked(self.producer, self.dlq_tracker, rec)
            return None
        send_tracked(self.producer, self.tracker, trade.to_json(), key=trade.symbol)
        self.stats.sent += 1
        return trade

    def flush(self) -> None:
        self.producer.flush()
        errors = self.tracker.errors + self.dlq_tracker.errors
        if errors:
            raise RuntimeError(f"{len(errors)} sends failed, first: {errors[0]}")


def repeated_messages(df: pd.DataFrame, repeat: int = 1) -> Iterator[dict[str, Any]]:
    """The file's messages ``repeat`` times; pass k is shifted forward by k x (span rounded up
    to whole hours + 1 h) and trade ids by k x (max id + 1), so passes never overlap."""
    if df.empty:
        return
    hour = 3_600_000
    span = int(df["ts_ms"].max() - df["ts_ms"].min())
    shift_ms = (span // hour + 2) * hour
    id_shift = int(df["trade_id"].max()) + 1
    for k in range(repeat):
        for m in to_messages(df):
            if k:
                m["ts_ms"] += k * shift_ms
                m["trade_id"] += k * id_shift
            yield m
