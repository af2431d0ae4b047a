"""The reusable builders of Grafana dashboard JSON: query targets (ClickHouse, Prometheus),
panels, field overrides, template variables, the dashboard layout, and shared query parts.

ClickHouse panels use the ``grafana-clickhouse-datasource`` plugin (v4) in SQL mode with its
macros only: ``$__timeFilter(col)``, ``$__timeInterval(col)``, ``$__fromTime``,
``$__toTime``; plus Grafana's global ``$__from``/``$__to`` (epoch ms) for the Int64 ``*_ms``
columns of tables without a DateTime column, and ``${var}`` template variables. Macro
arguments are plain column names (the materialized DateTime columns: ``window_start``,
``bar_end``, ``observed``). ReplacingMergeTree tables are read with ``FINAL``.
"""

from __future__ import annotations

from infra.grafana.datasources import CLICKHOUSE_PLUGIN, CLICKHOUSE_UID, PROMETHEUS_UID, Json

SCHEMA_VERSION = 39  # Grafana 10.4/11.x dashboard JSON
CH = {"type": CLICKHOUSE_PLUGIN, "uid": CLICKHOUSE_UID}
PROM = {"type": "prometheus", "uid": PROMETHEUS_UID}


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


# the symbol and timeframe template variables of the prices and predictions dashboards
SYM_TF = "symbol = '${symbol}' AND timeframe = '${timeframe}'"
