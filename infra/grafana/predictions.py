"""The ``candleflow-predictions`` dashboard: model predictions (``trading_predictions``)
against the realized return of the next bar (``candles``), calibration and scoring latency.
"""

from __future__ import annotations

from infra.grafana.datasources import Json
from infra.grafana.panels import (
    SYM_TF,
    TABLE_OPTS,
    TS_BARS,
    TS_LINES,
    ch,
    dashboard,
    label_name,
    panel,
    right_axis,
    stat_opts,
    variable,
)

PRED_FILTER = f"{SYM_TF} AND model_tag = '${{model_tag}}'"
CANDLES_AROUND = (
    f"FROM candles FINAL WHERE {SYM_TF} "
    "AND window_start >= $__fromTime - INTERVAL 1 DAY "
    "AND window_start <= $__toTime + INTERVAL 1 DAY"
)
# one row per prediction with the realized return of the next bar: the bar a prediction is
# made on ends at bar_end_ms (= its candle's window_end_ms), the next bar starts there
OUTCOMES = f"""
(SELECT p.bar_end AS time, p.p_up AS p_up, p.signal AS signal, p.status AS status,
c.close AS close, n.close AS next_close, n.close / c.close - 1 AS next_return
FROM (SELECT bar_end, bar_end_ms, p_up, signal, status FROM trading_predictions FINAL
WHERE {PRED_FILTER} AND $__timeFilter(bar_end)) AS p
INNER JOIN (SELECT window_end_ms, close {CANDLES_AROUND}) AS c ON c.window_end_ms = p.bar_end_ms
INNER JOIN (SELECT window_start_ms, close {CANDLES_AROUND}) AS n
ON n.window_start_ms = p.bar_end_ms)
"""


def predictions() -> Json:
    panels = [
        panel(
            "Scored predictions vs outcome (time range)",
            "stat",
            [
                ch(
                    "SELECT count() AS scored, countIf(signal != 0) AS signals, "
                    "avgIf(sign(signal) = sign(next_return), signal != 0 AND next_return != 0) "
                    "AS signal_hit_rate, "
                    "avg((p_up > 0.5) = (next_return > 0)) AS p_up_hit_rate, "
                    "corr(p_up, next_return) AS ic_p_up_next_return "
                    f"FROM {OUTCOMES} WHERE status = 'ok'",
                    table=True,
                )
            ],
            w=24,
            h=4,
            options=stat_opts(),
        ),
        panel(
            "p_up and signal vs realized next-bar return",
            "timeseries",
            [
                ch(
                    "SELECT time, p_up, signal, next_return "
                    f"FROM {OUTCOMES} WHERE status = 'ok' ORDER BY time"
                )
            ],
            w=24,
            h=10,
            custom=TS_LINES,
            overrides=[right_axis("next_return", "percentunit")],
        ),
        panel(
            "Calibration: realized up-fraction per p_up bin",
            "table",
            [
                ch(
                    "SELECT floor(p_up * 10) / 10 AS p_up_bin, count() AS n, "
                    "avg(p_up) AS mean_p_up, avg(next_return > 0) AS frac_up, "
                    "avg(next_return) AS mean_next_return "
                    f"FROM {OUTCOMES} WHERE status = 'ok' AND p_up IS NOT NULL "
                    "GROUP BY p_up_bin ORDER BY p_up_bin",
                    table=True,
                )
            ],
            options=TABLE_OPTS,
        ),
        panel(
            "Predictions by status (ok / refused / degraded)",
            "timeseries",
            [
                ch(
                    "SELECT $__timeInterval(bar_end) AS time, status, count() AS predictions "
                    f"FROM trading_predictions FINAL WHERE {PRED_FILTER} "
                    "AND $__timeFilter(bar_end) GROUP BY time, status ORDER BY time"
                )
            ],
            custom=TS_BARS,
            overrides=[label_name("status")],
        ),
        panel(
            "Scoring latency (strategy -> /score)",
            "timeseries",
            [
                ch(
                    "SELECT $__timeInterval(bar_end) AS time, "
                    "quantile(0.5)(latency_ms) AS p50_ms, quantile(0.99)(latency_ms) AS p99_ms "
                    f"FROM trading_predictions FINAL WHERE {PRED_FILTER} "
                    "AND $__timeFilter(bar_end) AND latency_ms IS NOT NULL "
                    "GROUP BY time ORDER BY time"
                )
            ],
            w=24,
            unit="ms",
            custom=TS_LINES,
        ),
    ]
    return dashboard(
        "candleflow-predictions",
        "candleflow / predictions vs outcomes",
        "Model predictions (`trading_predictions`) against the realized return of the next "
        "bar (`candles`).",
        panels,
        [
            variable("symbol", "SELECT DISTINCT symbol FROM trading_predictions ORDER BY symbol"),
            variable(
                "timeframe",
                "SELECT DISTINCT timeframe FROM trading_predictions "
                "WHERE symbol = '${symbol}' ORDER BY timeframe",
            ),
            variable(
                "model_tag",
                f"SELECT DISTINCT model_tag FROM trading_predictions WHERE {SYM_TF} "
                "ORDER BY model_tag",
            ),
        ],
    )
