"""Replay recorded trades from files into the ``trades`` topic.

``candleflow ingest replay FILE`` streams a file row by row through :func:`replay`:

* **CSV** (``.csv``, ``.csv.gz``; header row with the wire columns ``ts_ms, symbol, price,
  qty, side, trade_id`` in any order and optionally ``exchange``; extra columns are ignored;
  BOM, CRLF and quoted fields with commas/line breaks are fine) and **JSONL** (``.jsonl``,
  ``.jsonl.gz``; one JSON object per line) are read as *text*: every field reaches
  :func:`jobs.ingest.schema.validate` as the exact characters in the file (JSON numbers are
  parsed with ``parse_int=str``/``parse_float=str``), so ``354.11000000`` is sent as
  ``"354.11000000"``, and ``1721347022707.5``, ``1e12`` or a 40-digit number in an integer
  field is rejected by the validator, never truncated, rounded or overflowed. An empty CSV
  cell and a JSON ``null`` are missing; a JSON object/array value is handed on as such (the
  validator says ``<field> is not a scalar``). A JSONL line that is not exactly one JSON
  object is ``not a JSON object`` - including ``NaN``/``Infinity`` literals (not JSON, as
  for the job's parser) and a line holding two objects (stricter than the job's parser,
  which reads the first: in a file that means two records ran together). Without an
  ``exchange`` column (CSV) or key (JSONL) the exchange is ``binance``.
* **Parquet** (the layout of ``binance_trades_sample.parquet``) and **freqtrade**
  ``*-trades.json(.gz)`` (rows ``[ts_ms, id, order, side, price, amount, cost]``, the
  symbol from the file name, e.g. ``..._XRP_ETH-trades`` -> ``XRPETH``) have typed columns:
  a float price/qty becomes its exact shortest decimal text (``format_decimal``), an
  integral float in ``ts_ms``/``trade_id`` its integer, and a non-integral one its decimal
  text, which the validator rejects (never truncated); a null is missing.

Every row is validated; a bad one is dead-lettered on ``trades_dlq`` with the same record
shape as the Flink job's (``schema.dlq_record``) and these values:

========================  =====================================================
``reason``                the validator's reason, or one of the reader's below
``payload``               the row as read: the CSV record / JSONL line without its line
                          break (non-UTF-8 bytes as ``\\xNN``); parquet/freqtrade rows as
                          JSON of their typed values
``source_topic``          ``file:<file name>``
``source_partition``      null
``source_offset``         1-based line number where the row starts (the CSV header is
                          line 1; blank lines count); 1-based row number for parquet and
                          freqtrade files
``detected_by``           ``ingest-replay``
========================  =====================================================

Reader reasons: ``not valid UTF-8``, ``not a JSON object`` (not JSON, or JSON that is not an
object), ``wrong number of fields`` (CSV record vs header; freqtrade row shorter than 6),
``malformed CSV row`` (the csv module refused it), ``unterminated quoted field`` (the file
ends inside a CSV quote), ``file truncated or corrupt`` (the file could not be read past
this point, e.g. a truncated gzip: the partial tail is the payload, and it counts as one
row). Blank lines are skipped and counted, not dead-lettered.

A file that cannot be replayed at all (unsupported name, unreadable or not gzip, a CSV
header without the required columns or with duplicate ones, freqtrade JSON that does not
parse) raises :class:`FileError` before anything is sent: the CLI exits 2. Exit codes
otherwise: 0 = every row read was sent or dead-lettered and acknowledged, 1 = the broker
failed (the summary says how many were not delivered), 130 = interrupted (Ctrl-C).

``load_trades``/``to_messages``/``repeated_messages`` are the DataFrame helpers that tests
and benchmarks use on the clean sample files.

The code is split by role: :mod:`jobs.ingest.lines` (raw lines, gzip, decoding, CSV
records, truncation, the reader reasons), :mod:`jobs.ingest.files` (:class:`TradeFile`:
formats and rows), :mod:`jobs.ingest.sink` (:class:`TradeSink`: validation and the Kafka
producer), :mod:`jobs.ingest.pacing` (:class:`Pacer`), :mod:`jobs.ingest.messages` (the
DataFrame helpers), and this module (the replay driver and its report). The names other
modules use are re-exported here.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobs.ingest.files import (
    DEFAULT_EXCHANGE,
    FIELDS,
    INT_FIELDS,
    REQUIRED,
    FileError,
    FileRow,
    TradeFile,
)
from jobs.ingest.lines import (
    MALFORMED_CSV,
    NOT_OBJECT,
    NOT_UTF8,
    TRUNCATED,
    UNTERMINATED,
    WRONG_FIELDS,
)
from jobs.ingest.messages import load_trades, repeated_messages, to_messages
from jobs.ingest.pacing import Pacer
from jobs.ingest.schema import InvalidTrade, Trade
from jobs.ingest.sink import BrokerError, IngestStats, TradeSink

__all__ = [
    "DEFAULT_EXCHANGE",
    "DETECTED_BY",
    "FIELDS",
    "INT_FIELDS",
    "MALFORMED_CSV",
    "NOT_OBJECT",
    "NOT_UTF8",
    "REQUIRED",
    "TRUNCATED",
    "UNTERMINATED",
    "WRONG_FIELDS",
    "BrokerError",
    "FileError",
    "FileRow",
    "IngestStats",
    "Pacer",
    "ReplayReport",
    "TradeFile",
    "TradeSink",
    "load_trades",
    "repeated_messages",
    "replay",
    "to_messages",
]

log = logging.getLogger(__name__)

DETECTED_BY = "ingest-replay"


@dataclass
class ReplayReport:
    """What a replay did; ``lines()`` is the printed summary, ``as_dict()`` the logged one."""

    file: str
    passes: int
    stats: IngestStats
    topic: str
    dlq_topic: str
    unit: str = "line"  # what first_line counts: "line" (CSV/JSONL) or "row"
    blank_lines: int = 0
    first_line: dict[str, int] = field(default_factory=dict)  # reason -> first line/row
    outcome: str = "complete"  # complete | interrupted | broker failed | error
    detail: str = ""
    read_errors: list[str] = field(default_factory=list)
    acked_trades: int = 0  # acknowledged by the broker
    acked_dead_letters: int = 0
    failed_deliveries: int = 0
    end_offsets: dict[int, int] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def not_delivered(self) -> int:
        return (
            self.stats.sent + self.stats.dead_lettered - self.acked_trades - self.acked_dead_letters
        )

    @property
    def exit_code(self) -> int:
        return {"complete": 0, "interrupted": 130}.get(self.outcome, 1)

    def lines(self) -> list[str]:
        st = self.stats
        rate = st.read / self.elapsed_s if self.elapsed_s > 0 else 0.0
        passes = f" in {self.passes} passes" if self.passes > 1 else ""
        out = [
            f"replay {self.file}: {self.outcome}" + (f" ({self.detail})" if self.detail else ""),
            f"  read {st.read:,} rows{passes} ({self.blank_lines:,} blank line(s) skipped) "
            f"in {self.elapsed_s:.1f} s, {rate:,.0f} rows/s",
            f"  sent {st.sent:,} -> {self.topic}, acknowledged {self.acked_trades:,} "
            f"(end offsets {self.end_offsets})",
            f"  dead-lettered {st.dead_lettered:,} -> {self.dlq_topic}, "
            f"acknowledged {self.acked_dead_letters:,}",
        ]
        for reason, n in sorted(st.reasons.items(), key=lambda kv: (-kv[1], kv[0])):
            first = self.first_line.get(reason)
            out.append(f"    {n:,} x {reason!r} (first at {self.unit} {first})")
        if unsent := st.read - st.sent - st.dead_lettered:
            out.append(f"  {unsent:,} row(s) read but not sent: {self.outcome}")
        out += [f"  {e}" for e in self.read_errors]
        if self.not_delivered or self.failed_deliveries:
            out.append(
                f"  NOT delivered: {self.not_delivered:,} "
                f"({self.failed_deliveries:,} failed deliveries)"
            )
        return out

    def as_dict(self) -> dict[str, Any]:
        st = self.stats
        return {
            "file": self.file,
            "outcome": self.outcome,
            "detail": self.detail,
            "passes": self.passes,
            "read": st.read,
            "sent": st.sent,
            "dead_lettered": st.dead_lettered,
            "reasons": dict(st.reasons),
            "first_line": dict(self.first_line),
            "blank_lines": self.blank_lines,
            "read_errors": list(self.read_errors),
            "acked_trades": self.acked_trades,
            "acked_dead_letters": self.acked_dead_letters,
            "not_delivered": self.not_delivered,
            "elapsed_s": round(self.elapsed_s, 3),
        }


@dataclass
class _Span:
    """Event-time span and largest trade id of the first pass (sets the --repeat shifts)."""

    lo: int | None = None
    hi: int | None = None
    max_id: int = -1

    def add(self, t: Trade) -> None:
        self.lo = t.ts_ms if self.lo is None else min(self.lo, t.ts_ms)
        self.hi = t.ts_ms if self.hi is None else max(self.hi, t.ts_ms)
        self.max_id = max(self.max_id, t.trade_id)

    def shifts(self, k: int) -> tuple[int, int]:
        hour = 3_600_000
        span = (self.hi - self.lo) if self.lo is not None and self.hi is not None else 0
        return k * (span // hour + 2) * hour, k * (self.max_id + 1)


def replay(
    source: TradeFile,
    sink: TradeSink,
    *,
    pacer: Pacer | None = None,
    limit: int = 0,
    repeat: int = 1,
    on_row: Callable[[], None] | None = None,
    flush_timeout_s: float | None = None,
) -> ReplayReport:
    """Send every row of ``source`` (``repeat`` passes; pass k shifted forward in time and
    trade id like :func:`repeated_messages`) through ``sink``; bad rows are dead-lettered
    with their reason and line. Never raises for a row, a broker failure or Ctrl-C: the
    returned report says what happened (``outcome``, ``exit_code``)."""
    report = ReplayReport(
        source.path.name, repeat, sink.stats, sink.topic, sink.dlq_topic, unit=source.unit
    )
    span = _Span()
    t0 = time.monotonic()

    def reject(reason: str, row: FileRow) -> None:
        report.first_line.setdefault(reason, row.line)
        sink.dead_letter(reason, row.text, source=source.source, offset=row.line)

    try:
        for k in range(repeat):
            shift_ms, id_shift = span.shifts(k) if k else (0, 0)
            for row in source.rows(limit):
                sink.stats.read += 1
                if row.fields is None:
                    reject(row.reason or NOT_OBJECT, row)
                else:
                    try:
                        trade = sink.check(row.fields)
                        if k:
                            trade = sink.check(
                                {
                                    **trade.to_json(),
                                    "ts_ms": trade.ts_ms + shift_ms,
                                    "trade_id": trade.trade_id + id_shift,
                                }
                            )
                    except InvalidTrade as e:
                        reject(e.reason, row)
                    else:
                        if not k:
                            span.add(trade)
                        if pacer is not None:
                            pacer.wait(trade.ts_ms)
                        sink.publish(trade)
                if on_row is not None:
                    on_row()
                if sink.failures:
                    raise BrokerError(sink.failures[0])
            report.blank_lines += source.blank_lines
            if source.read_error:
                report.read_errors.append(source.read_error)
    except KeyboardInterrupt:
        report.outcome, report.detail = "interrupted", "Ctrl-C"
    except BrokerError as e:
        report.outcome, report.detail = "broker failed", str(e)
    except Exception as e:  # a bug, not a row: still end with the counts
        log.exception("replay of %s failed", source.path.name)
        report.outcome, report.detail = "error", repr(e)
    finally:
        _finish(report, sink, flush_timeout_s)
        report.elapsed_s = time.monotonic() - t0
        log.info("replay summary: %s", json.dumps(report.as_dict()))
    return report


def _finish(report: ReplayReport, sink: TradeSink, timeout_s: float | None) -> None:
    try:
        sink.producer.flush(timeout=timeout_s)
    except KeyboardInterrupt:
        if report.outcome == "complete":
            report.outcome, report.detail = "interrupted", "Ctrl-C while flushing"
    except Exception as e:
        if report.outcome == "complete":
            report.outcome, report.detail = "broker failed", f"flush: {e!r}"
    report.acked_trades = sink.tracker.acked
    report.acked_dead_letters = sink.dlq_tracker.acked
    report.failed_deliveries = len(sink.failures)
    report.end_offsets = dict(sink.tracker.end)
    if report.outcome == "complete" and (report.failed_deliveries or report.not_delivered):
        first = sink.failures[0] if sink.failures else "not acknowledged"
        report.outcome, report.detail = "broker failed", first
