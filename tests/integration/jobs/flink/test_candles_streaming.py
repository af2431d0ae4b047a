"""Unbounded (live) mode: the job keeps running; a 1m candle is emitted as soon as the
watermark passes its window end, and not before."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest

from infra.connectors import Endpoints
from infra.kafka import consume
from jobs.flink import candles
from jobs.ingest.replay import load_trades, to_messages
from tests.conftest import TRADES_PARQUET, make_settings
from tests.integration.jobs.flink.candles_harness import assert_candles_equal, produce_raw
from tests.reference import candles_reference

pytestmark = pytest.mark.integration


def test_streaming_emits_closed_windows_only(broker, state_dir) -> None:
    s = make_settings(broker, state_dir, watermark_delay_ms=2000)
    trades = [t for t in to_messages(load_trades(TRADES_PARQUET)) if t["ts_ms"] < 1680653100000]
    assert len(trades) > 10_000  # the first capture (2023-04-04/05), ~6 minutes
    handle = candles.submit(Endpoints(s))  # no end offsets: runs until cancelled
    try:
        produce_raw(s, trades)
        max_ts = max(t["ts_ms"] for t in trades)
        wm = max_ts - s.watermark_delay_ms
        ref = candles_reference(trades)
        # exactly the windows (any timeframe) the watermark has closed; the rest stay open
        closed = {k: v for k, v in ref.items() if v["window_end_ms"] - 1 <= wm}
        still_open = set(ref) - set(closed)
        assert sum(k[1] == "1m" for k in closed) >= 3
        assert any(k[1] == "1m" for k in still_open) and any(k[1] == "5m" for k in still_open)
        dec = lambda b: json.loads(b, parse_float=Decimal)  # noqa: E731
        deadline = time.monotonic() + 120
        got: dict = {}
        while time.monotonic() < deadline and len(got) < len(closed):
            got = {
                (c["symbol"], c["timeframe"], c["window_start_ms"]): c
                for _, c in consume(
                    s.kafka_bootstrap, s.topic_candles, idle_timeout_s=3, deserialize=dec
                )
            }
        time.sleep(3)  # nothing else may appear: the remaining windows are still open
        got = {
            (c["symbol"], c["timeframe"], c["window_start_ms"]): c
            for _, c in consume(
                s.kafka_bootstrap, s.topic_candles, idle_timeout_s=3, deserialize=dec
            )
        }
        assert_candles_equal(got, closed)
        status = handle.result.get_job_client().get_job_status().result()  # type: ignore[attr-defined]
        assert status.name == "RUNNING"
    finally:
        handle.result.get_job_client().cancel().result()  # type: ignore[attr-defined]
