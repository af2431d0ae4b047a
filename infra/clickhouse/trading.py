"""The strategy job's tables (migration 005): topic kinds -> tables, and one strategy's
rows read back as typed DataFrames (:func:`trading_summary`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from infra.clickhouse.errors import quote
from udfs.topics import pandas_dtypes

if TYPE_CHECKING:
    from infra.clickhouse.store import ClickHouseStore

# topic kind -> table (jobs/writers/trading.py writes them, sql/clickhouse/005_strategy.sql)
TRADING_TABLES = {
    "predictions": "trading_predictions",
    "orders": "trading_orders",
    "fills": "trading_fills",
    "equity": "trading_equity",
}
# the trading tables read back as frames: the topic models' dtypes (udfs/topics.py)
_ORDER_DTYPES = pandas_dtypes("orders")
_FILL_DTYPES = pandas_dtypes("fills")
_EQUITY_DTYPES = pandas_dtypes("equity")
_DAILY_DTYPES = {
    "day": "object",
    **dict.fromkeys(
        ("open_equity", "close_equity", "min_equity", "max_equity", "realized_pnl", "fees_paid"),
        "float64",
    ),
    "last_bar_end_ms": "int64",
}
_PREDICTION_DTYPES = {"model_tag": "object", "status": "object", "n": "int64"}


@dataclass
class TradingSummary:
    """One strategy's rows as stored (``FINAL``: one row per key), for reports and Grafana.

    ``orders``: the order messages (NULL signal = NaN) plus ``state``: ``rejected``,
    ``filled`` (a fill with its client_order_id exists) or ``pending``. ``fills`` and
    ``equity``: the messages, by bar. ``daily``: ``pnl_daily`` (UTC day of bar_end_ms - 1):
    first/last/min/max equity of the day's snapshots, realized P&L and fees at the day's
    last bar, and ``pnl`` = this day's close - the previous day's close (the first day:
    close - the first snapshot). ``predictions``: rows per (model_tag, status) of the
    strategy's timeframe(s).
    """

    strategy: str
    orders: pd.DataFrame
    fills: pd.DataFrame
    equity: pd.DataFrame
    daily: pd.DataFrame
    predictions: pd.DataFrame


def typed_frame(store: ClickHouseStore, sql: str, dtypes: Mapping[str, str]) -> pd.DataFrame:
    """A query's rows with fixed dtypes, the same from both backends (NULL float -> NaN)."""
    rows = store.query(sql)
    df = pd.DataFrame.from_records(rows, columns=list(dtypes))
    return df.astype(dict(dtypes))


def trading_summary(store: ClickHouseStore, strategy: str) -> TradingSummary:
    """Orders, fills, equity, daily P&L and prediction counts of ``strategy`` (see
    :class:`TradingSummary`) from the tables of migration 005, read with ``FINAL``."""
    q = quote(strategy)
    t = TRADING_TABLES
    orders = typed_frame(
        store,
        f"SELECT {', '.join(_ORDER_DTYPES)} FROM {t['orders']} FINAL WHERE strategy = {q} "
        "ORDER BY bar_end_ms, client_order_id",
        _ORDER_DTYPES,
    )
    fills = typed_frame(
        store,
        f"SELECT {', '.join(_FILL_DTYPES)} FROM {t['fills']} FINAL WHERE strategy = {q} "
        "ORDER BY bar_end_ms, client_order_id",
        _FILL_DTYPES,
    )
    equity = typed_frame(
        store,
        f"SELECT {', '.join(_EQUITY_DTYPES)} FROM {t['equity']} FINAL WHERE strategy = {q} "
        "ORDER BY bar_end_ms",
        _EQUITY_DTYPES,
    )
    daily = typed_frame(
        store,
        "SELECT toString(day) AS day, argMinMerge(open_equity) AS open_equity, "
        "argMaxMerge(close_equity) AS close_equity, minMerge(min_equity) AS min_equity, "
        "maxMerge(max_equity) AS max_equity, argMaxMerge(close_realized_pnl) AS realized_pnl, "
        "argMaxMerge(close_fees) AS fees_paid, maxMerge(last_ts_ms) AS last_bar_end_ms "
        f"FROM pnl_daily WHERE strategy = {q} GROUP BY day ORDER BY day",
        _DAILY_DTYPES,
    )
    daily["pnl"] = daily["close_equity"].diff()
    if len(daily):
        daily.loc[daily.index[0], "pnl"] = (
            daily["close_equity"].iloc[0] - daily["open_equity"].iloc[0]
        )
    tfs = ", ".join(quote(str(tf)) for tf in sorted(set(equity["timeframe"]))) or "''"
    predictions = typed_frame(
        store,
        f"SELECT model_tag, status, count() AS n FROM {t['predictions']} FINAL "
        f"WHERE timeframe IN ({tfs}) GROUP BY model_tag, status ORDER BY model_tag, status",
        _PREDICTION_DTYPES,
    )
    filled = set(fills["client_order_id"])
    orders["state"] = [
        "rejected" if st == "rejected" else "filled" if oid in filled else "pending"
        for st, oid in zip(orders["status"], orders["client_order_id"], strict=True)
    ]
    return TradingSummary(strategy, orders, fills, equity, daily, predictions)
