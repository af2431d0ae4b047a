"""Per-stage pipeline freshness: rows for ClickHouse ``pipeline_freshness`` + Prometheus metrics.

A *stage* is a point where a bar (symbol, timeframe, window end) becomes visible downstream;
the process that sees it there records one observation:

==================  =========================================  ===========================
stage               observed_at_ms                             recorded by
==================  =========================================  ===========================
``trade``           ingest (send) time of a trade               (optional) ingestion
``candle``          the candle reached the candles writer       candles writer
``feature_redis``   the batch's push to Redis (Feast online)    feature writer
                    succeeded
``prediction``      ``predicted_at_ms`` of the prediction       trading writer
``order``           the order message reached the writer        trading writer
==================  =========================================  ===========================

``lag_ms = observed_at_ms - (window_end_ms + watermark_delay_ms)``: the time after the
earliest moment the watermark could have closed the bar. The delay is the candles job's
``watermark_delay_ms`` for ``candle``, plus the features job's ``features_watermark_delay_ms``
for the stages after the features job; ``trade`` has none (window_end_ms = the trade's ts).

Metrics (process-global, prometheus_client's default registry), served on
``metrics_host:metrics_port`` (``CANDLEFLOW_METRICS_PORT``, default 9464, 0 = off) by
:func:`start_metrics_server`, which the writers' commands call:

- ``candleflow_stage_lag_seconds{stage,timeframe}``: histogram of ``lag_ms / 1000``;
- ``candleflow_stage_last_window_end_seconds{stage,symbol,timeframe}``: newest bar seen;
- ``candleflow_writer_rows_total{writer,topic}``, ``candleflow_writer_dead_lettered_total
  {writer,topic}``, ``candleflow_writer_batches_total{writer}``: committed work per writer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from prometheus_client import Counter, Gauge, Histogram

from infra.settings import Settings

log = logging.getLogger(__name__)

Stage = Literal["trade", "candle", "feature_redis", "prediction", "order"]
STAGES: tuple[Stage, ...] = ("trade", "candle", "feature_redis", "prediction", "order")
TABLE = "pipeline_freshness"

# 10 ms .. 120 s, roughly x2 - x2.5 per step
LAG_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0,
    20.0, 30.0, 45.0, 60.0, 90.0, 120.0,
)  # fmt: skip

STAGE_LAG = Histogram(
    "candleflow_stage_lag_seconds",
    "observed_at - (window_end + watermark delay) of a bar at a pipeline stage",
    ["stage", "timeframe"],
    buckets=LAG_BUCKETS,
)
LAST_WINDOW_END = Gauge(
    "candleflow_stage_last_window_end_seconds",
    "window end (epoch seconds) of the newest bar seen at a pipeline stage",
    ["stage", "symbol", "timeframe"],
)
WRITER_ROWS = Counter(
    "candleflow_writer_rows_total", "rows written and committed by a writer", ["writer", "topic"]
)
WRITER_DLQ = Counter(
    "candleflow_writer_dead_lettered_total",
    "malformed messages sent to a dead-letter topic by a writer",
    ["writer", "topic"],
)
WRITER_BATCHES = Counter(
    "candleflow_writer_batches_total", "micro-batches committed by a writer", ["writer"]
)


def now_ms() -> int:
    return int(time.time() * 1000)


def watermark_delay_ms(settings: Settings, stage: str) -> int:
    """The delay before the watermark can close a bar, as seen at ``stage``."""
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
    if stage == "trade":
        return 0
    if stage == "candle":
        return settings.watermark_delay_ms
    return settings.watermark_delay_ms + settings.features_watermark_delay_ms


@dataclass(frozen=True)
class Observation:
    symbol: str
    timeframe: str
    window_end_ms: int
    observed_at_ms: int


def freshness_rows(
    stage: str,
    observations: Iterable[Observation | tuple[str, str, int, int] | Mapping[str, Any]],
    *,
    settings: Settings,
    observed_by: str,
) -> list[dict[str, Any]]:
    """``pipeline_freshness`` rows for ``stage`` from (symbol, timeframe, window_end_ms,
    observed_at_ms) observations (tuples, :class:`Observation` or mappings)."""
    delay = watermark_delay_ms(settings, stage)
    out: list[dict[str, Any]] = []
    for o in observations:
        if isinstance(o, Observation):
            sym, tf, end, seen = o.symbol, o.timeframe, o.window_end_ms, o.observed_at_ms
        elif isinstance(o, Mapping):
            sym, tf = o["symbol"], o["timeframe"]
            end, seen = o["window_end_ms"], o["observed_at_ms"]
        else:
            sym, tf, end, seen = o
        out.append(
            {
                "stage": stage,
                "symbol": str(sym),
                "timeframe": str(tf),
                "window_end_ms": int(end),
                "observed_at_ms": int(seen),
                "lag_ms": int(seen) - (int(end) + delay),
                "watermark_delay_ms": delay,
                "observed_by": observed_by,
            }
        )
    return out


_last_end: dict[tuple[str, str, str], int] = {}


def observe(rows: Sequence[Mapping[str, Any]]) -> None:
    """Feed :func:`freshness_rows` rows into the Prometheus lag histogram and gauges."""
    newest: dict[tuple[str, str, str], int] = {}
    for r in rows:
        STAGE_LAG.labels(r["stage"], r["timeframe"]).observe(r["lag_ms"] / 1000.0)
        key = (r["stage"], r["symbol"], r["timeframe"])
        if r["window_end_ms"] > newest.get(key, -(2**63)):
            newest[key] = r["window_end_ms"]
    for key, end in newest.items():
        if end > _last_end.get(key, -(2**63)):  # a replayed old bar does not move it back
            _last_end[key] = end
            LAST_WINDOW_END.labels(*key).set(end / 1000.0)


def count_batch(
    writer: str, rows_by_topic: Mapping[str, int], dlq_by_topic: Mapping[str, int]
) -> None:
    """Count a committed micro-batch of ``writer``."""
    WRITER_BATCHES.labels(writer).inc()
    for topic, n in rows_by_topic.items():
        if n:
            WRITER_ROWS.labels(writer, topic).inc(n)
    for topic, n in dlq_by_topic.items():
        if n:
            WRITER_DLQ.labels(writer, topic).inc(n)


_served: dict[tuple[str, int], Any] = {}


def start_metrics_server(settings: Settings) -> int | None:
    """Serve /metrics on ``metrics_host:metrics_port`` in a daemon thread; returns the port,
    or ``None`` when off (port 0) or the port cannot be bound (logged, not fatal: metrics
    must never stop a writer). Idempotent per address in a process."""
    port, host = settings.metrics_port, settings.metrics_host
    if not port:
        return None
    if (host, port) in _served:
        return port
    from prometheus_client import start_http_server

    try:
        _served[(host, port)] = start_http_server(port, addr=host)
    except OSError as e:
        log.warning(
            "metrics: cannot serve on %s:%d (%s); running without /metrics "
            "(set CANDLEFLOW_METRICS_PORT to a free port, 0 = off)",
            host,
            port,
            e,
        )
        return None
    log.info("metrics: http://%s:%d/metrics", host, port)
    return port
