"""The ``candleflow-trading`` dashboard: the paper account of one strategy (``trading_equity``,
``trading_fills``, ``trading_orders``, ``pnl_daily``).
"""

from __future__ import annotations

from infra.grafana.datasources import Json
from infra.grafana.panels import (
    TABLE_OPTS,
    TS_LINES,
    TS_STEPS,
    ch,
    dashboard,
    label_name,
    panel,
    stat_opts,
    variable,
)

STRAT = "strategy = '${strategy}'"
EQUITY = f"FROM trading_equity FINAL WHERE {STRAT} AND $__timeFilter(bar_end)"
FILLS_IN_RANGE = (
    f"FROM trading_fills FINAL WHERE {STRAT} AND bar_end_ms > $__from AND bar_end_ms <= $__to"
)
# pnl_daily's days with pnl = close - previous close (the first day: close - open),
# as in infra.clickhouse.trading_summary
DAILY = f"""
(SELECT day, open_equity, close_equity, realized_pnl, fees_paid,
close_equity - if(row_number() OVER w = 1, open_equity, lagInFrame(close_equity) OVER w) AS pnl
FROM (SELECT day, argMinMerge(open_equity) AS open_equity,
argMaxMerge(close_equity) AS close_equity,
argMaxMerge(close_realized_pnl) AS realized_pnl, argMaxMerge(close_fees) AS fees_paid
FROM pnl_daily WHERE {STRAT} GROUP BY day)
WINDOW w AS (ORDER BY day ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW))
"""


def trading() -> Json:
    panels = [
        panel(
            "Account (last snapshot in range)",
            "stat",
            [
                ch(
                    "SELECT argMax(equity, bar_end_ms) AS last_equity, "
                    "argMax(gross, bar_end_ms) AS last_gross, "
                    "argMax(realized_pnl, bar_end_ms) AS last_realized_pnl, "
                    "argMax(fees_paid, bar_end_ms) AS last_fees_paid, "
                    "argMax(equity, bar_end_ms) / argMin(equity, bar_end_ms) - 1 "
                    "AS return_in_range, "
                    f"max(killed) AS killed, max(degraded) AS degraded {EQUITY}",
                    table=True,
                )
            ],
            w=24,
            h=4,
            options=stat_opts(),
        ),
        panel(
            "Equity, gross exposure, cash",
            "timeseries",
            [ch(f"SELECT bar_end AS time, equity, gross, cash {EQUITY} ORDER BY time")],
            w=24,
            h=9,
            custom=TS_LINES,
        ),
        panel(
            "Realized P&L and fees (cumulative)",
            "timeseries",
            [ch(f"SELECT bar_end AS time, realized_pnl, fees_paid {EQUITY} ORDER BY time")],
            custom=TS_LINES,
        ),
        panel(
            "Drawdown",
            "timeseries",
            [
                ch(
                    "SELECT time, equity / max(equity) OVER (ORDER BY time ROWS BETWEEN "
                    "UNBOUNDED PRECEDING AND CURRENT ROW) - 1 AS drawdown "
                    f"FROM (SELECT bar_end AS time, equity {EQUITY}) ORDER BY time"
                )
            ],
            unit="percentunit",
            custom={**TS_LINES, "fillOpacity": 20},
        ),
        panel(
            "Position per symbol (after each fill)",
            "timeseries",
            [
                ch(
                    "SELECT toDateTime(intDiv(bar_end_ms - 1, 1000), 'UTC') AS time, symbol, "
                    f"position_after AS position {FILLS_IN_RANGE} ORDER BY time"
                )
            ],
            custom=TS_STEPS,
            overrides=[label_name("symbol")],
        ),
        panel(
            "Open positions (all fills)",
            "table",
            [
                ch(
                    "SELECT symbol, argMax(position_after, bar_end_ms) AS position, "
                    "argMax(avg_entry_after, bar_end_ms) AS avg_entry, "
                    "sum(realized_pnl) AS realized_pnl, sum(fee) AS fees, count() AS fills "
                    f"FROM trading_fills FINAL WHERE {STRAT} GROUP BY symbol ORDER BY symbol",
                    table=True,
                )
            ],
            options=TABLE_OPTS,
        ),
        panel(
            "Daily P&L (pnl_daily)",
            "barchart",
            [
                ch(
                    "SELECT toString(day) AS date, pnl, realized_pnl, fees_paid "
                    f"FROM {DAILY} WHERE day >= toDate($__fromTime) AND day <= toDate($__toTime) "
                    "ORDER BY day",
                    table=True,
                )
            ],
            options={"xField": "date", "showValue": "never", "legend": {"showLegend": True}},
        ),
        panel(
            "Orders by status and reason (time range)",
            "table",
            [
                ch(
                    "SELECT status, reason, side, count() AS orders, sum(qty) AS qty "
                    f"FROM trading_orders FINAL WHERE {STRAT} "
                    "AND bar_end_ms > $__from AND bar_end_ms <= $__to "
                    "GROUP BY status, reason, side ORDER BY orders DESC",
                    table=True,
                )
            ],
            options=TABLE_OPTS,
        ),
        panel(
            "Fills (latest 500 in range)",
            "table",
            [
                ch(
                    "SELECT toDateTime(intDiv(bar_end_ms - 1, 1000), 'UTC') AS time, symbol, "
                    "side, qty, price, fee, position_after, avg_entry_after, realized_pnl, "
                    f"cash_after, client_order_id {FILLS_IN_RANGE} "
                    "ORDER BY bar_end_ms DESC, client_order_id LIMIT 500",
                    table=True,
                )
            ],
            w=24,
            h=10,
            options=TABLE_OPTS,
        ),
    ]
    return dashboard(
        "candleflow-trading",
        "candleflow / positions & P&L",
        "The paper account of one strategy: `trading_equity`, `trading_fills`, "
        "`trading_orders`, `pnl_daily`.",
        panels,
        [variable("strategy", "SELECT DISTINCT strategy FROM trading_equity ORDER BY strategy")],
        time_from="now-7d",
    )
