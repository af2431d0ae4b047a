"""Every line of the writers' adversarial corpus (tests/data/writer_corpus/) through its
writer's parse function: the verdict (row or dead letter) and the exact reason, case by
case; an ``ok`` row must equal the message by the documented rules (tests/writer_corpus.py)
and fit every store (the column types, pandas/Feast for features)."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from infra.clickhouse import features_row
from jobs.writers.candles import FIELDS as CANDLE_FIELDS
from jobs.writers.candles import parse_candle_message
from jobs.writers.dlq import dlq_record
from jobs.writers.features import REQUIRED as FEATURE_FIELDS
from jobs.writers.features import parse_feature_message
from jobs.writers.trading import FIELDS as TRADING_FIELDS
from jobs.writers.trading import parse_trading_message
from jobs.writers.validation import INT_RANGES, InvalidMessage
from tests.writer_corpus import TOPICS, Case, expected_row, load, same

CASES = [c for t in TOPICS for c in load(t)]


def parse(case: Case) -> dict[str, Any]:
    """The topic's parse function, then the conversion to the ClickHouse row."""
    if case.topic == "candles":
        return parse_candle_message(case.raw)
    if case.topic == "features":
        return features_row(parse_feature_message(case.raw))
    return parse_trading_message(case.topic, case.raw)


def columns(topic: str) -> list[str]:
    if topic == "candles":
        return list(CANDLE_FIELDS)
    if topic == "features":
        return list(FEATURE_FIELDS)
    return [f for f, _ in TRADING_FIELDS[topic]]


def test_corpus_covers_every_topic_and_both_verdicts() -> None:
    for topic in TOPICS:
        cases = [c for c in CASES if c.topic == topic]
        verdicts = {c.expect for c in cases}
        assert verdicts == {"ok", "dlq"}, topic
        assert sum(c.expect == "ok" for c in cases) >= 20, topic
        assert len({c.case for c in cases}) == len(cases), f"{topic}: duplicate case names"
        assert all(c.reason for c in cases if c.expect == "dlq")


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case(case: Case) -> None:
    if case.expect == "dlq":
        with pytest.raises(InvalidMessage) as e:
            parse(case)
        assert e.value.reason == case.reason
        # the dead-letter record of any message fits a broker message and round-trips
        rec = dlq_record(e.value.reason, case.raw, case.topic, 0, case.line, "test")
        assert len(rec) < 1_000_000
        assert json.loads(rec)["reason"] == case.reason
        return
    row = parse(case)
    cols = columns(case.topic)
    assert list(row) == cols
    want = expected_row(case.topic, case, cols)
    got = {k: int(v) if isinstance(v, bool) else v for k, v in row.items()}
    bad = {k: (got[k], want[k]) for k in cols if not same(got[k], want[k])}
    assert not bad
    for k, v in got.items():  # what ClickHouse Int64 / Float64 columns hold
        if isinstance(v, int):
            lo, hi = INT_RANGES["Int64"]
            assert lo <= v < hi, k
        if isinstance(v, str):
            v.encode("utf-8")


def test_ok_feature_rows_fit_pandas_parquet_and_feast() -> None:
    """The feature writer's frame step (pandas datetime64[us, UTC], int64, float64) takes
    every ``ok`` row, and its timestamps equal the ClickHouse epoch ms."""
    import pandas as pd

    from infra.feature_store import SCHEMA, to_feature_frame

    rows = [parse_feature_message(c.raw) for c in CASES if c.topic == "features"
            and c.expect == "ok"]  # fmt: skip
    frame = to_feature_frame(rows)
    assert len(frame) == len(rows)
    import pyarrow as pa

    pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False)  # the parquet write
    for col in ("event_time", "computed_at"):
        ms = (frame[col] - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(milliseconds=1)
        assert ms.tolist() == [features_row(r)[col] for r in rows]


def test_the_crashes_of_issue_13_are_dead_letters() -> None:
    """The messages that used to stop `candleflow features write` / `candles write`."""
    by_case = {(c.topic, c.case): c for c in CASES}
    for topic, name, reason in [
        ("features", "window_start_ms = 2**70 (crashed the writer before)", "window_start_ms: out"),
        ("features", "trade_count = 2**64 (crashed the writer before)", "trade_count: out"),
        ("features", "event_time: 9999-12-31", "event_time: out of range"),
        ("candles", "window_start_ms: 2**70", "window_start_ms: out of range"),
    ]:
        case = by_case[(topic, name)]
        with pytest.raises(InvalidMessage) as e:
            parse(case)
        assert e.value.reason.startswith(reason)


def test_nan_stays_nan_where_a_nullable_number_allows_it() -> None:
    (case,) = [c for c in CASES if c.topic == "orders" and c.case == "signal: NaN (stored as NaN)"]
    assert math.isnan(parse(case)["signal"])
