"""The writers' second line of defence (jobs/writers/base.KafkaBatchWriter): a store that
rejects a batch's data gets the batch bisected; the messages it rejects on their own are
dead-lettered with its error, the rest is written and the batch committed. Transient and
other errors keep today's behaviour (retry / stop, no commit). The loop runs here with an
in-memory store, producer and consumer (the real ones: tests/integration/
test_writer_corpus.py)."""

from __future__ import annotations

import json
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from infra.clickhouse import ClickHouseDataError, ClickHouseError
from infra.settings import Settings
from jobs.writers.base import KafkaBatchWriter
from jobs.writers.config import Batch, WriterConfig
from jobs.writers.errors import RowsRejected, is_data_error, is_transient
from jobs.writers.validation import InvalidMessage


@dataclass
class Msg:
    _topic: str
    _offset: int
    _value: bytes | None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def error(self) -> None:
        return None


@dataclass
class Producer:
    sent: list[tuple[str, bytes]] = field(default_factory=list)

    def produce(self, topic: str, rec: bytes, on_delivery: Any = None) -> None:
        self.sent.append((topic, rec))

    def flush(self, timeout: float = 0) -> int:
        return 0


@dataclass
class Consumer:
    commits: list[list[Any]] = field(default_factory=list)

    def commit(self, offsets: list[Any], asynchronous: bool = False) -> None:
        self.commits.append(offsets)


class Store:
    """Rejects rows whose ``v`` is "bad" (like a constraint), whole blocks of more than
    ``max_block`` rows (like "too many partitions"), or everything with ``fail_with``."""

    def __init__(self, max_block: int = 10_000, fail_with: BaseException | None = None):
        self.rows: list[dict[str, Any]] = []
        self.calls = 0
        self.max_block = max_block
        self.fail_with = fail_with

    def insert(self, rows: list[dict[str, Any]]) -> None:
        self.calls += 1
        if self.fail_with is not None:
            raise self.fail_with
        if len(rows) > self.max_block:
            raise ClickHouseDataError("Code: 252. Too many partitions for single INSERT block")
        bad = [r for r in rows if r["v"] == "bad"]
        if bad:
            raise ClickHouseDataError(f"Code: 469. Constraint violated: v = {bad[0]['v']!r}")
        self.rows.extend(rows)


class Writer(KafkaBatchWriter):
    name = "test writer"
    detected_by = "test_writer"

    def __init__(self, store: Store, **cfg: Any) -> None:
        state = Path(tempfile.mkdtemp(prefix="writer-isolation-"))  # positions file
        s = Settings(metrics_port=0, state_dir=state)
        super().__init__(s, WriterConfig(group_id="g", **cfg), ["t"])
        self.store = store
        self._producer = Producer()
        self._consumer = Consumer()

    def dlq_topic(self, topic: str) -> str:
        return f"{topic}_dlq"

    def parse(self, topic: str, raw: bytes | None) -> dict[str, Any]:
        obj = json.loads(raw or b"null")
        if obj == "crash":
            raise KeyError("a parser bug")
        if not isinstance(obj, dict):
            raise InvalidMessage("not a JSON object")
        return obj

    def _prepare(self) -> str:
        return ""

    def _write(self, batch: Batch) -> None:
        rows = batch.rows.get("t", [])
        self._retrying("test store", lambda: self.store.insert(rows))


def batch_of(w: Writer, values: list[Any]) -> Batch:
    b = Batch()
    for i, v in enumerate(values):
        w._add(b, Msg("t", 100 + i, json.dumps(v).encode()))
    return b


def dlq(w: Writer) -> list[dict[str, Any]]:
    assert isinstance(w._producer, Producer)
    return [json.loads(rec) for _, rec in w._producer.sent]


def test_rows_a_store_rejects_are_isolated_and_dead_lettered() -> None:
    store = Store()
    w = Writer(store)
    values = [{"i": i, "v": "bad" if i in (7, 61) else "ok"} for i in range(100)]
    batch = batch_of(w, values)
    w._write_and_commit(batch)
    assert sorted(r["i"] for r in store.rows) == [i for i in range(100) if i not in (7, 61)]
    recs = dlq(w)
    assert [r["source_offset"] for r in recs] == [107, 161]
    assert {r["reason"] for r in recs} == {
        "test store rejected the message: ClickHouseDataError: Code: 469. Constraint "
        "violated: v = 'bad'"
    }
    assert json.loads(recs[0]["payload"]) == values[7]
    assert w.stats.rows == 98 and w.stats.dead_lettered == 2
    assert [(tp.offset) for tp in w._consumer.commits[-1]] == [200]  # the whole batch
    assert store.calls < 40  # bisection, not one insert per row


def test_a_batch_too_big_for_the_store_is_written_in_parts() -> None:
    """Each row is fine; only the block is too big (chDB: > 100 partitions per INSERT)."""
    store = Store(max_block=30)
    w = Writer(store)
    w._write_and_commit(batch_of(w, [{"i": i, "v": "ok"} for i in range(100)]))
    assert sorted(r["i"] for r in store.rows) == list(range(100))
    assert dlq(w) == [] and w.stats.rows == 100


def test_a_batch_of_only_bad_rows_is_all_dead_lettered_and_committed() -> None:
    w = Writer(Store())
    w._write_and_commit(batch_of(w, [{"i": 0, "v": "bad"}]))
    w._write_and_commit(batch_of(w, [{"i": i, "v": "bad"} for i in range(5)]))
    assert len(dlq(w)) == 6 and w.stats.rows == 0 and len(w._consumer.commits) == 2


@pytest.mark.parametrize(
    "exc",
    [
        KeyError("a bug"),
        ClickHouseError("trades: no insertable column(s) ['x']"),  # schema, not data
        RuntimeError("Code: 60. DB::Exception: Unknown table"),
    ],
)
def test_other_errors_stop_the_writer_without_bisecting_or_committing(exc: Exception) -> None:
    store = Store(fail_with=exc)
    w = Writer(store)
    with pytest.raises(type(exc)):
        w._write_and_commit(batch_of(w, [{"i": i, "v": "ok"} for i in range(8)]))
    assert store.calls == 1 and dlq(w) == [] and w._consumer.commits == []


def test_transient_errors_are_retried_not_dead_lettered() -> None:
    store = Store(fail_with=ConnectionRefusedError("down"))
    w = Writer(store, retry_timeout_s=0.5, max_backoff_s=0.05)
    with pytest.raises(ConnectionRefusedError):
        w._write_and_commit(batch_of(w, [{"i": i, "v": "ok"} for i in range(8)]))
    assert store.calls > 2 and dlq(w) == [] and w._consumer.commits == []
    assert w.stats.retries["test store"] >= 2


def test_a_parser_bug_dead_letters_the_message_instead_of_stopping() -> None:
    store = Store()
    w = Writer(store)
    w._write_and_commit(batch_of(w, [{"i": 0, "v": "ok"}, "crash", [1]]))
    assert [r["i"] for r in store.rows] == [0]
    assert [r["reason"] for r in dlq(w)] == [
        "parse failed: KeyError: 'a parser bug'",
        "not a JSON object",
    ]


def test_error_classes() -> None:
    import pandas as pd
    from clickhouse_driver import errors as ch

    assert is_data_error(ch.TypeMismatchError("Column x: argument out of range"))  # code 53
    assert is_data_error(ch.ServerException("Too many partitions for single INSERT block", 252))
    assert not is_data_error(ch.ServerException("Too many parts (300)", 252))
    assert is_transient(ch.ServerException("Too many parts (300)", 252))
    assert not is_transient(ch.ServerException("Too many partitions for single INSERT", 252))
    assert not is_data_error(ch.ServerException("Unknown table", 60))
    assert not is_data_error(ch.NetworkError("down"))
    assert is_data_error(OverflowError("Python int too large to convert to C long"))
    assert is_data_error(struct.error("ushort format requires 0 <= number <= 65535"))
    assert is_data_error(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"))
    with pytest.raises(ValueError) as oob:
        pd.to_datetime(["9999-12-31T23:59:59Z"], utc=True, format="mixed")
    assert is_data_error(oob.value)  # pandas OutOfBoundsDatetime
    assert is_data_error(ClickHouseDataError("candles.symbol (String): surrogates"))
    assert not is_data_error(ClickHouseError("cannot reach ClickHouse at h:1: refused"))
    assert not is_data_error(KeyError("bug")) and not is_data_error(ConnectionError())
    assert is_data_error(RowsRejected("ClickHouse", OverflowError("x")))

    class ChdbError(RuntimeError):  # chdb._exceptions.ChdbError: the code is in the text
        pass

    assert is_data_error(ChdbError("Code: 469. DB::Exception: Constraint `c` is violated"))
    assert not is_data_error(ChdbError("Code: 60. DB::Exception: Unknown table"))
