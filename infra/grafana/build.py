"""The Grafana dashboards and datasources, as code.

``python -m infra.grafana.build`` renders them into this folder (the output is committed
and a unit test checks it is up to date):

* ``dashboards/*.json`` - one dashboard per file (the ``dashboard`` model of Grafana's
  ``POST /api/dashboards/db``), stable uids, all in the folder ``candleflow``;
* ``datasources.json`` - the two datasources for the docker-compose hosts (``clickhouse``
  native port 9000, ``prometheus:9090``), in the body of ``POST /api/datasources``;
* ``provisioning/`` - the same as Grafana file-provisioning YAML (a container can mount it
  at ``/etc/grafana/provisioning`` and the dashboards at ``/var/lib/grafana/dashboards``).

``candleflow grafana provision`` (infra/grafana/provision.py) pushes them over the HTTP API.

ClickHouse panels use the ``grafana-clickhouse-datasource`` plugin (v4) in SQL mode with its
macros only: ``$__timeFilter(col)``, ``$__timeInterval(col)``, ``$__fromTime``,
``$__toTime``; plus Grafana's global ``$__from``/``$__to`` (epoch ms) for the Int64 ``*_ms``
columns of tables without a DateTime column, and ``${var}`` template variables. Macro
arguments are plain column names (the materialized DateTime columns: ``window_start``,
``bar_end``, ``observed``). ReplacingMergeTree tables are read with ``FINAL``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml

from infra.settings import Settings

GRAFANA_DIR = Path(__file__).resolve().parent
FOLDER_UID = "candleflow"
FOLDER_TITLE = "candleflow"
CLICKHOUSE_UID = "candleflow-clickhouse"
PROMETHEUS_UID = "candleflow-prometheus"
CLICKHOUSE_PLUGIN = "grafana-clickhouse-datasource"
# the hosts the Grafana server reaches (docker-compose service names), from infra/settings.py
DEFAULT_CLICKHOUSE_URL: str = Settings.model_fields["grafana_clickhouse_url"].default
DEFAULT_PROMETHEUS_URL: str = Settings.model_fields["grafana_prometheus_url"].default
SCHEMA_VERSION = 39  # Grafana 10.4/11.x dashboard JSON
STAGES = ("candle", "feature_redis", "prediction", "order")

CH = {"type": CLICKHOUSE_PLUGIN, "uid": CLICKHOUSE_UID}
PROM = {"type": "prometheus", "uid": PROMETHEUS_UID}
Json = dict[str, Any]


# -------------------------------------------------------------------------- datasources
def clickhouse_datasource(url: str = DEFAULT_CLICKHOUSE_URL) -> Json:
    """The ClickHouse datasource for a server URL: ``clickhouse://[user[:pw]@]host[:port]/db``
    (native protocol, port 9000) or ``http(s)://[user[:pw]@]host[:port][/?database=db]``
    (HTTP, 8123/8443). Embedded chDB (``chdb://``) cannot be reached by Grafana."""
    parts = urlsplit(url)
    if parts.scheme in ("clickhouse", "tcp"):
        protocol, secure, port = "native", False, parts.port or 9000
        database = parts.path.strip("/") or "default"
    elif parts.scheme in ("http", "https"):
        secure = parts.scheme == "https"
        protocol, port = "http", parts.port or (8443 if secure else 8123)
        query = dict(p.split("=", 1) for p in parts.query.split("&") if "=" in p)
        database = query.get("database", "default")
    else:
        raise ValueError(
            f"ClickHouse URL {url!r}: Grafana needs a server, clickhouse://host:9000/db or "
            "http://host:8123 (embedded chDB is not reachable from Grafana)"
        )
    if not parts.hostname:
        raise ValueError(f"ClickHouse URL {url!r} has no host")
    ds: Json = {
        "uid": CLICKHOUSE_UID,
        "name": "candleflow ClickHouse",
        "type": CLICKHOUSE_PLUGIN,
        "access": "proxy",
        "isDefault": False,
        "jsonData": {
            "host": parts.hostname,
            "port": port,
            "protocol": protocol,
            "secure": secure,
            "username": unquote(parts.username or "default"),
            "defaultDatabase": database,
        },
    }
    if parts.password:
        ds["secureJsonData"] = {"password": unquote(parts.password)}
    return ds


def prometheus_datasource(url: str = DEFAULT_PROMETHEUS_URL) -> Json:
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"Prometheus URL {url!r}: expected http(s)://host:port")
    return {
        "uid": PROMETHEUS_UID,
        "name": "candleflow Prometheus",
        "type": "prometheus",
        "access": "proxy",
        "url": url,
        "isDefault": False,
        "jsonData": {"httpMethod": "POST", "timeInterval": "15s"},
    }


def datasources(
    clickhouse_url: str = DEFAULT_CLICKHOUSE_URL, prometheus_url: str = DEFAULT_PROMETHEUS_URL
) -> list[Json]:
    return [clickhouse_datasource(clickhouse_url), prometheus_datasource(prometheus_url)]


# ----------------------------------------------------------------------- panel helpers
def sql(text: str) -> str:
    """Normalise a query's whitespace (one clause per line, no indentation noise)."""
    return "\n".join(ln.strip() for ln in text.strip().splitlines() if ln.strip())


def ch(query: str, table: bool = False, ref: str = "A") -> Json:
    """A ClickHouse plugin (v4) SQL target; format 0 = time series, 1 = table."""
    return {
        "refId": ref,
        "datasource": CH,
        "editorType": "sql",
        "queryType": "table" if table else "timeSeries",
        "format": 1 if table else 0,
        "rawSql": sql(query),
    }


def prom(expr: str, legend: str, ref: str = "A") -> Json:
    return {
        "refId": ref,
        "datasource": PROM,
        "editorType": "code",
        "expr": expr,
        "legendFormat": legend,
        "range": True,
    }


def panel(
    title: str,
    kind: str,
    targets: list[Json],
    w: int = 12,
    h: int = 8,
    unit: str | None = None,
    description: str = "",
    options: Json | None = None,
    custom: Json | None = None,
    overrides: list[Json] | None = None,
) -> Json:
    defaults: Json = {}
    if unit:
        defaults["unit"] = unit
    if custom:
        defaults["custom"] = custom
    p: Json = {
        "type": kind,
        "title": title,
        "datasource": targets[0]["datasource"],
        "targets": targets,
        "gridPos": {"x": 0, "y": 0, "w": w, "h": h},
        "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
        "options": options or {},
    }
    if description:
        p["description"] = description
    return p


def right_axis(field: str, unit: str | None = None) -> Json:
    props: list[Json] = [{"id": "custom.axisPlacement", "value": "right"}]
    if unit:
        props.append({"id": "unit", "value": unit})
    return {"matcher": {"id": "byName", "options": field}, "properties": props}


def label_name(label: str) -> Json:
    """Name each series of a long-format query by one label (e.g. the stage)."""
    return {
        "matcher": {"id": "byType", "options": "number"},
        "properties": [{"id": "displayName", "value": "${__field.labels." + label + "}"}],
    }


def variable(name: str, query: str, label: str | None = None) -> Json:
    """A ClickHouse query variable (single value, refreshed on time range change)."""
    q = sql(query)
    return {
        "type": "query",
        "name": name,
        "label": label or name,
        "datasource": CH,
        "query": q,
        "definition": q,
        "refresh": 2,
        "sort": 1,
        "multi": False,
        "includeAll": False,
        "hide": 0,
        "current": {},
        "options": [],
    }


def dashboard(
    uid: str,
    title: str,
    description: str,
    panels: list[Json],
    variables: list[Json] | None = None,
    time_from: str = "now-24h",
) -> Json:
    """Lay ``panels`` out left to right in rows of 24 columns and number them 1..n."""
    x = y = row_h = 0
    for i, p in enumerate(panels, start=1):
        g = p["gridPos"]
        if x + g["w"] > 24:
            x, y, row_h = 0, y + row_h, 0
        g["x"], g["y"] = x, y
        x, row_h = x + g["w"], max(row_h, g["h"])
        p["id"] = i
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["candleflow"],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "time": {"from": time_from, "to": "now"},
        "refresh": "30s",
        "templating": {"list": variables or []},
        "annotations": {"list": []},
        "links": [
            {
                "type": "dashboards",
                "tags": ["candleflow"],
                "asDropdown": True,
                "title": "candleflow",
                "includeVars": False,
                "keepTime": True,
            }
        ],
        "panels": panels,
    }


TS_LINES: Json = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 0, "showPoints": "never"}
TS_STEPS: Json = {**TS_LINES, "lineInterpolation": "stepAfter"}
TS_BARS: Json = {"drawStyle": "bars", "fillOpacity": 60, "stacking": {"mode": "normal"}}
TABLE_OPTS: Json = {"showHeader": True, "cellHeight": "sm"}


def stat_opts(fields: str = "") -> Json:
    return {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": fields, "values": False},
        "colorMode": "none",
        "graphMode": "none",
        "textMode": "value_and_name",
    }


# --------------------------------------------------------------------------- dashboards
SYM_TF = "symbol = '${symbol}' AND timeframe = '${timeframe}'"


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


# BentoML 1.4 (@bentoml.service): bentoml._internal.server.http.instruments
# .RunnerTrafficMetricsMiddleware, namespace api_server.metrics.namespace = bentoml_service;
# labels endpoint, service_name, service_version, http_response_code, runner_name
BENTO = "bentoml_service"
RATE = "[$__rate_interval]"


def serving() -> Json:
    dur = f"{BENTO}_request_duration_seconds_bucket"
    latency = [
        prom(
            f"histogram_quantile(0.{q}, sum by (le, endpoint) (rate({dur}{RATE})))",
            f"{{{{endpoint}}}} p{q}",
            ref,
        )
        for q, ref in ((50, "A"), (95, "B"), (99, "C"))
    ]
    total = f"{BENTO}_request_total"
    panels = [
        panel(
            "Error ratio (non-2xx / all, 5m)",
            "stat",
            [
                prom(
                    f'sum(rate({total}{{http_response_code!~"2.."}}[5m])) / sum(rate({total}[5m]))',
                    "non-2xx ratio",
                )
            ],
            w=8,
            h=4,
            unit="percentunit",
            options=stat_opts(),
        ),
        panel(
            "Requests/s (5m)",
            "stat",
            [prom(f"sum(rate({total}[5m]))", "requests/s")],
            w=8,
            h=4,
            unit="reqps",
            options=stat_opts(),
        ),
        panel(
            "In flight",
            "stat",
            [prom(f"sum({BENTO}_request_in_progress)", "in flight")],
            w=8,
            h=4,
            options=stat_opts(),
        ),
        panel(
            "Request latency p50 / p95 / p99 per endpoint",
            "timeseries",
            latency,
            w=24,
            h=9,
            unit="s",
            custom=TS_LINES,
        ),
        panel(
            "Request rate per endpoint and status",
            "timeseries",
            [
                prom(
                    f"sum by (endpoint, http_response_code) (rate({total}{RATE}))",
                    "{{endpoint}} {{http_response_code}}",
                )
            ],
            unit="reqps",
            custom=TS_LINES,
        ),
        panel(
            "Non-2xx responses per endpoint",
            "timeseries",
            [
                prom(
                    f"sum by (endpoint, http_response_code) "
                    f'(rate({total}{{http_response_code!~"2.."}}{RATE}))',
                    "{{endpoint}} {{http_response_code}}",
                )
            ],
            unit="reqps",
            custom=TS_BARS,
        ),
    ]
    return dashboard(
        "candleflow-serving",
        "candleflow / service latency",
        "The BentoML predictor's request metrics (Prometheus scrape of /metrics).",
        panels,
        time_from="now-1h",
    )


DASHBOARDS = {
    "prices": prices,
    "pipeline": pipeline,
    "predictions": predictions,
    "trading": trading,
    "serving": serving,
}


def dashboards() -> dict[str, Json]:
    """File stem -> dashboard model."""
    return {name: build() for name, build in DASHBOARDS.items()}


# ------------------------------------------------------------------------------ output
def dump_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def rendered() -> dict[str, str]:
    """Path relative to infra/grafana -> file text, for everything this module generates."""
    out = {f"dashboards/{name}.json": dump_json(d) for name, d in dashboards().items()}
    out["datasources.json"] = dump_json(datasources())
    ds_yaml = {
        "apiVersion": 1,
        "datasources": [
            {**{k: v for k, v in d.items() if k not in ("secureJsonData",)}, "editable": True}
            for d in datasources()
        ],
    }
    providers = {
        "apiVersion": 1,
        "providers": [
            {
                "name": "candleflow",
                "folder": FOLDER_TITLE,
                "folderUid": FOLDER_UID,
                "type": "file",
                "allowUiUpdates": True,  # so `candleflow grafana provision` may overwrite
                "options": {"path": "/var/lib/grafana/dashboards/candleflow"},
            }
        ],
    }
    header = "# generated by infra/grafana/build.py - do not edit\n"
    out["provisioning/datasources/candleflow.yaml"] = header + yaml.safe_dump(
        ds_yaml, sort_keys=False
    )
    out["provisioning/dashboards/candleflow.yaml"] = header + yaml.safe_dump(
        providers, sort_keys=False
    )
    return out


def write(root: Path = GRAFANA_DIR) -> list[Path]:
    paths = []
    for rel, text in rendered().items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for p in write():
        print(p.relative_to(GRAFANA_DIR.parent.parent))
