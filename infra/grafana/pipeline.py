"""The ``candleflow-pipeline`` dashboard: per-stage lag after bar close (``pipeline_freshness``)
and feature freshness (``features``, ``feature_freshness``); the stage names.
"""

from __future__ import annotations

from infra.grafana.datasources import Json
from infra.grafana.panels import (
    TABLE_OPTS,
    TS_BARS,
    TS_LINES,
    ch,
    dashboard,
    label_name,
    panel,
    variable,
)

# the stages that log to pipeline_freshness, in pipeline order
STAGES = ("candle", "feature_redis", "prediction", "order")

# one row per (stage, bar): the first observation (the log may hold re-deliveries)
FIRST_SEEN = """
(SELECT stage, symbol, window_end_ms, min(lag_ms) AS first_lag_ms,
min(observed) AS first_observed
FROM pipeline_freshness
WHERE timeframe = '${timeframe}' AND $__timeFilter(observed)
GROUP BY stage, symbol, window_end_ms)
"""
STAGE_ORDER = "indexOf([" + ", ".join(f"'{s}'" for s in STAGES) + "], stage)"


def pipeline() -> Json:
    lag_panels = [
        panel(
            f"Lag p{q} per stage",
            "timeseries",
            [
                ch(
                    f"SELECT $__timeInterval(first_observed) AS time, stage, "
                    f"quantile(0.{q})(first_lag_ms) AS lag_ms FROM {FIRST_SEEN} "
                    "GROUP BY time, stage ORDER BY time"
                )
            ],
            w=8,
            unit="ms",
            custom=TS_LINES,
            options={"legend": {"displayMode": "list", "placement": "bottom"}},
            overrides=[label_name("stage")],
        )
        for q in (50, 95, 99)
    ]
    panels = [
        panel(
            "Lag per stage (first observation per bar, time range)",
            "table",
            [
                ch(
                    "SELECT stage, count() AS bars, quantile(0.5)(first_lag_ms) AS p50_ms, "
                    "quantile(0.95)(first_lag_ms) AS p95_ms, "
                    "quantile(0.99)(first_lag_ms) AS p99_ms, max(first_lag_ms) AS max_ms "
                    f"FROM {FIRST_SEEN} GROUP BY stage ORDER BY {STAGE_ORDER}",
                    table=True,
                )
            ],
            w=24,
            h=6,
            description=(
                "lag = when the stage's output was observed - (bar end + watermark delay): "
                "the time after the earliest moment the bar could close."
            ),
            options=TABLE_OPTS,
        ),
        *lag_panels,
        panel(
            "Observations per stage",
            "timeseries",
            [
                ch(
                    "SELECT $__timeInterval(observed) AS time, stage, count() AS observations "
                    "FROM pipeline_freshness "
                    "WHERE timeframe = '${timeframe}' AND $__timeFilter(observed) "
                    "GROUP BY time, stage ORDER BY time"
                )
            ],
            custom=TS_BARS,
            overrides=[label_name("stage")],
        ),
        panel(
            "Feature computation lag (features.computed_at - window_end)",
            "timeseries",
            [
                ch(
                    "SELECT $__timeInterval(window_start) AS time, "
                    "quantile(0.5)(computed_at - window_end_ms) AS p50_ms, "
                    "quantile(0.99)(computed_at - window_end_ms) AS p99_ms, "
                    "max(computed_at - window_end_ms) AS max_ms "
                    "FROM features FINAL "
                    "WHERE timeframe = '${timeframe}' AND $__timeFilter(window_start) "
                    "GROUP BY time ORDER BY time"
                )
            ],
            unit="ms",
            custom=TS_LINES,
        ),
        panel(
            "Feature freshness per symbol (feature_freshness, all time)",
            "table",
            [
                ch(
                    "SELECT symbol, timeframe, "
                    "toDateTime(intDiv(maxMerge(last_window_end_ms), 1000), 'UTC') "
                    "AS last_window_end, "
                    "round((toUnixTimestamp64Milli(now64(3)) - maxMerge(last_window_end_ms)) "
                    "/ 1000, 1) AS age_s, "
                    "toDateTime(intDiv(maxMerge(last_ready_window_end_ms), 1000), 'UTC') "
                    "AS last_ready_window_end, "
                    "maxMerge(max_lag_ms) AS max_lag_ms, countMerge(rows_written) AS rows_written "
                    "FROM feature_freshness GROUP BY symbol, timeframe ORDER BY symbol, timeframe",
                    table=True,
                )
            ],
            w=24,
            options=TABLE_OPTS,
            overrides=[
                {
                    "matcher": {"id": "byName", "options": "age_s"},
                    "properties": [{"id": "unit", "value": "s"}],
                }
            ],
        ),
    ]
    return dashboard(
        "candleflow-pipeline",
        "candleflow / pipeline lag & freshness",
        "Per-stage lag after bar close (`pipeline_freshness`: "
        + ", ".join(STAGES)
        + ") and feature freshness (`features`, `feature_freshness`).",
        panels,
        [
            variable(
                "timeframe", "SELECT DISTINCT timeframe FROM pipeline_freshness ORDER BY timeframe"
            )
        ],
        time_from="now-6h",
    )
