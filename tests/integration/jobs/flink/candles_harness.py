"""Drive the real candles job: produce payloads to a real broker, run the job bounded
to exactly the produced offsets, read every output topic back."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from infra.connectors import Endpoints
from infra.kafka import OffsetTracker, make_producer, read_all, send_tracked
from infra.settings import Settings
from jobs.flink import candles


@dataclass
class CandlesRun:
    candles: list[dict[str, Any]]
    dlq: list[dict[str, Any]]
    late: list[dict[str, Any]]
    end_offsets: dict[int, int]

    def by_key(self) -> dict[tuple[str, str, int], dict[str, Any]]:
        out: dict[tuple[str, str, int], dict[str, Any]] = {}
        for c in self.candles:
            key = (c["symbol"], c["timeframe"], c["window_start_ms"])
            assert key not in out, f"duplicate candle {key}"
            out[key] = c
        return out


def produce_raw(settings: Settings, payloads: list[Any]) -> dict[int, int]:
    """Send payloads as-is (dicts as JSON, strings verbatim): no validation on the way."""
    producer = make_producer(settings.kafka_bootstrap)
    tracker = OffsetTracker(settings.topic_trades)
    for p in payloads:
        value = p.encode() if isinstance(p, str) else json.dumps(p).encode()
        key = p.get("symbol") if isinstance(p, dict) else None
        send_tracked(producer, tracker, value, key=key)
    producer.flush()
    producer.close()
    assert not tracker.errors, tracker.errors
    assert tracker.acked == len(payloads)
    return tracker.end


def run_candles(settings: Settings, payloads: list[Any], expected_candles: int) -> CandlesRun:
    end = produce_raw(settings, payloads)
    handle = candles.submit(Endpoints(settings, end_offsets=end))
    handle.wait()
    dec = lambda b: json.loads(b, parse_float=Decimal)  # noqa: E731 - exact decimals
    c = read_all(
        settings.kafka_bootstrap,
        settings.topic_candles,
        expected=expected_candles,
        idle_timeout_s=5,
        deserialize=dec,
    )
    dlq = read_all(settings.kafka_bootstrap, settings.topic_trades_dlq, idle_timeout_s=2)
    late = read_all(
        settings.kafka_bootstrap, settings.topic_trades_late, idle_timeout_s=2, deserialize=dec
    )
    return CandlesRun(c, dlq, late, end)


def assert_candles_equal(
    got: dict[tuple[str, str, int], dict[str, Any]],
    want: dict[tuple[str, str, int], dict[str, Any]],
) -> None:
    assert set(got) == set(want), (
        f"missing {sorted(set(want) - set(got))[:5]} extra {sorted(set(got) - set(want))[:5]}"
    )
    fields = [
        "open",
        "high",
        "low",
        "close",
        "volume",
        "quote_volume",
        "trade_count",
        "buy_volume",
        "sell_volume",
        "first_trade_id",
        "last_trade_id",
        "window_end_ms",
        "vwap",
    ]
    bad = []
    for key, w in want.items():
        g = got[key]
        for f in fields:
            gv = float(g[f]) if f == "vwap" else g[f]
            if gv != w[f]:
                bad.append((key, f, g[f], w[f]))
    assert not bad, f"{len(bad)} mismatches, first: {bad[:5]}"
