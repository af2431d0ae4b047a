"""The candles job on real Binance trades vs an independent pandas/Decimal computation."""

from __future__ import annotations

import json
import random
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest

from infra.connectors import Endpoints
from infra.kafka import read_all
from jobs.flink import candles
from jobs.ingest.replay import TradeSink, load_trades, to_messages
from jobs.ingest.schema import InvalidTrade, validate
from tests.conftest import TRADES_PARQUET, make_settings
from tests.integration.jobs.flink.candles_harness import assert_candles_equal, run_candles
from tests.reference import candles_reference, garbage, late_mask, shuffle_within

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trades() -> list[dict[str, Any]]:
    return list(to_messages(load_trades(TRADES_PARQUET)))


@pytest.fixture(scope="module")
def reference(trades: list[dict[str, Any]]) -> dict[tuple[str, str, int], dict[str, Any]]:
    return candles_reference(trades)


def test_replay_in_order_equals_pandas(broker, state_dir, trades, reference) -> None:
    s = make_settings(broker, state_dir)
    run = run_candles(s, trades, expected_candles=len(reference))
    assert len(trades) == 115_993
    assert Counter(k[1] for k in reference) == Counter(c["timeframe"] for c in run.candles)
    assert_candles_equal(run.by_key(), reference)
    assert run.late == []
    assert run.dlq == []
    assert sum(c["trade_count"] for c in run.candles if c["timeframe"] == "1m") == len(trades)


def test_shuffled_within_watermark_and_late_trades(broker, state_dir, trades, reference) -> None:
    s = make_settings(broker, state_dir)
    delay = s.watermark_delay_ms
    shuffled = shuffle_within(trades, delay)
    assert shuffled != trades  # really out of order
    # 40 extra copies of early trades (new ids) sent at the very end: far behind the watermark
    rng = random.Random(3)
    late_src = rng.sample(trades[:20_000], 40)
    extra = [{**t, "trade_id": 10**15 + i} for i, t in enumerate(late_src)]
    # and 25 copies sent 2 s after their own time (< delay): on time, so they count
    payloads = shuffled + extra
    expected_late = sum(late_mask([p["ts_ms"] for p in payloads], delay))
    assert expected_late == 40

    run = run_candles(s, payloads, expected_candles=len(reference))
    assert_candles_equal(run.by_key(), reference)
    assert len(run.late) == expected_late
    assert sorted(r["trade_id"] for r in run.late) == sorted(t["trade_id"] for t in extra)
    assert run.dlq == []


def test_garbage_goes_to_dlq_with_reasons_and_candles_unchanged(
    broker, state_dir, trades, reference
) -> None:
    s = make_settings(broker, state_dir)
    rng = random.Random(11)
    payloads: list[Any] = []
    bad: list[str] = []
    for t in trades:
        payloads.append(t)
        if rng.random() < 0.01:  # 1% garbage, shaped like the trade just before it
            g = garbage(t, len(bad))
            payloads.append(g)
            bad.append(g)
    assert len(bad) > 1000

    run = run_candles(s, payloads, expected_candles=len(reference))
    assert_candles_equal(run.by_key(), reference)
    assert len(run.dlq) == len(bad)
    # every garbage message is there, with the reason the Python validator gives it
    want: Counter[tuple[str, str]] = Counter()
    for g in bad:
        with pytest.raises(InvalidTrade) as e:
            validate(g)
        want[(g, e.value.reason)] += 1
    got = Counter((r["payload"], r["reason"]) for r in run.dlq)
    assert got == want
    assert all(
        r["detected_by"] == "candles-job" and r["source_offset"] is not None for r in run.dlq
    )
    assert run.late == []


def test_same_sql_on_files(tmp_path, trades, reference) -> None:
    """source_connector=filesystem: the same statements read JSON lines and write files."""
    from infra.settings import Settings

    (tmp_path / "trades").mkdir()
    (tmp_path / "trades" / "part-0.jsonl").write_text("\n".join(json.dumps(t) for t in trades))
    s = Settings(source_connector="filesystem", state_dir=tmp_path / "state")
    candles.submit(Endpoints(s, files_dir=tmp_path)).wait()
    rows = [
        json.loads(line, parse_float=Decimal)
        for f in sorted((tmp_path / "candles").rglob("part-*"))
        for line in f.read_text().splitlines()
    ]
    by_key = {(c["symbol"], c["timeframe"], c["window_start_ms"]): c for c in rows}
    assert len(by_key) == len(rows)
    assert_candles_equal(by_key, reference)


@pytest.mark.parametrize(
    ("what", "poison", "reason"),
    [
        # malformed (price NaN) but stamped one day after the last trade
        ("malformed, one day ahead", {"price": "NaN", "day_ahead": True}, "price is not numeric"),
        # well-formed in every field, but stamped in 2090
        ("valid but in 2090", {"ts_ms": 3_786_912_000_000}, "ts_ms in the future"),
    ],
)
def test_a_rejected_record_never_moves_the_watermark(
    broker, state_dir, trades, what: str, poison: dict[str, Any], reason: str
) -> None:
    s = make_settings(broker, state_dir)
    real = trades[:40]
    bad = {**real[19], "trade_id": 10**15}
    if poison.pop("day_ahead", False):
        bad["ts_ms"] = real[19]["ts_ms"] + 86_400_000
    bad |= poison
    payloads = [*real[:20], bad, *real[20:]]
    want = candles_reference(real)
    run = run_candles(s, payloads, expected_candles=len(want))
    assert_candles_equal(run.by_key(), want)
    assert sum(c["trade_count"] for c in run.candles if c["timeframe"] == "1m") == 40
    assert run.late == []
    assert [(r["reason"], r["source_offset"]) for r in run.dlq] == [(reason, 20)], what


def test_a_replay_sent_twice_counts_each_trade_once(broker, state_dir, trades, reference) -> None:
    """At-least-once producers: the whole file replayed twice into one topic through the
    ingest sink, plus 20 trades repeated right after themselves, gives one replay's candles."""
    s = make_settings(broker, state_dir)
    rng = random.Random(5)
    again = set(rng.sample(range(len(trades)), 20))
    sink = TradeSink.for_settings(s)
    for i, t in enumerate(trades):
        sink.send(t)
        if i in again:
            sink.send(t)  # a reconnect re-sends the last trade
    for t in trades:  # the replay re-run after a crash
        sink.send(t)
    sink.flush()
    assert sink.stats.sent == 2 * len(trades) + 20 and sink.stats.dead_lettered == 0
    candles.submit(Endpoints(s, end_offsets=dict(sink.tracker.end))).wait()
    out = read_all(
        s.kafka_bootstrap,
        s.topic_candles,
        expected=len(reference),
        idle_timeout_s=5,
        deserialize=lambda b: json.loads(b, parse_float=Decimal),
    )
    got = {(c["symbol"], c["timeframe"], c["window_start_ms"]): c for c in out}
    assert len(got) == len(out), "a candle was emitted twice"
    assert_candles_equal(got, reference)
    assert sum(c["trade_count"] for c in out if c["timeframe"] == "1m") == len(trades)
