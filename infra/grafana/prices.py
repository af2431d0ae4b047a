"""The ``candleflow-prices`` dashboard: candles (ClickHouse ``candles``) and the indicator
features (``features``) of one symbol and timeframe.
"""

from __future__ import annotations

from infra.grafana.datasources import Json
from infra.grafana.panels import (
    SYM_TF,
    TS_BARS,
    TS_LINES,
    ch,
    dashboard,
    panel,
    right_axis,
    stat_opts,
    variable,
)


def prices() -> Json:
    candles = f"FROM candles FINAL WHERE {SYM_TF} AND $__timeFilter(window_start)"
    features = f"FROM features FINAL WHERE {SYM_TF} AND $__timeFilter(window_start)"
    panels = [
        panel(
            "Summary",
            "stat",
            [
                ch(
                    "SELECT argMax(close, window_start_ms) AS last_close, count() AS bars, "
                    f"sum(trade_count) AS trades, sum(volume) AS volume {candles}",
                    table=True,
                )
            ],
            w=24,
            h=4,
            options=stat_opts(),
        ),
        panel(
            "OHLC + volume (candles)",
            "candlestick",
            [
                ch(
                    "SELECT window_start AS time, open, high, low, close, volume "
                    f"{candles} ORDER BY time"
                )
            ],
            w=24,
            h=10,
            options={
                "mode": "candles+volume",
                "candleStyle": "candles",
                "colorStrategy": "open-close",
            },
        ),
        panel(
            "Close, moving averages, Bollinger bands (features)",
            "timeseries",
            [
                ch(
                    "SELECT window_start AS time, close, sma_20, sma_50, ema_12, ema_26, "
                    f"bb_20_2_upper, bb_20_2_lower {features} ORDER BY time"
                )
            ],
            w=24,
            h=9,
            custom=TS_LINES,
        ),
        panel(
            "RSI / MFI / stochastic",
            "timeseries",
            [
                ch(
                    "SELECT window_start AS time, rsi_14, mfi_14, stoch_14_3_3_k, "
                    f"stoch_14_3_3_d {features} ORDER BY time"
                )
            ],
            custom=TS_LINES,
        ),
        panel(
            "MACD (12, 26, 9)",
            "timeseries",
            [
                ch(
                    "SELECT window_start AS time, macd_12_26_9_line, macd_12_26_9_signal, "
                    f"macd_12_26_9_hist {features} ORDER BY time"
                )
            ],
            custom=TS_LINES,
        ),
        panel(
            "Buy / sell volume",
            "timeseries",
            [ch(f"SELECT window_start AS time, buy_volume, sell_volume {candles} ORDER BY time")],
            custom=TS_BARS,
        ),
        panel(
            "Volatility: ATR, realized vol, Bollinger width",
            "timeseries",
            [
                ch(
                    "SELECT window_start AS time, atr_14, rv_30, bb_20_2_width "
                    f"{features} ORDER BY time"
                )
            ],
            custom=TS_LINES,
            overrides=[right_axis("rv_30"), right_axis("bb_20_2_width")],
        ),
    ]
    return dashboard(
        "candleflow-prices",
        "candleflow / prices & indicators",
        "Candles (ClickHouse `candles`) and indicator features (`features`) of one symbol.",
        panels,
        [
            variable("symbol", "SELECT DISTINCT symbol FROM candles ORDER BY symbol"),
            variable(
                "timeframe",
                "SELECT DISTINCT timeframe FROM candles WHERE symbol = '${symbol}' "
                "ORDER BY timeframe",
            ),
        ],
    )
