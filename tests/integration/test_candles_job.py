"""The candles job on real Binance trades vs an independent pandas/Decimal computation."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest

from jobs.ingest.replay import load_trades, to_messages
from jobs.ingest.schema import InvalidTrade, validate
from tests.conftest import TRADES_PARQUET, make_settings
from tests.integration.candles_harness import assert_candles_equal, run_candles
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
    import json
    from decimal import Decimal

    from infra.connectors import Endpoints
    from infra.settings import Settings
    from jobs import candles

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
