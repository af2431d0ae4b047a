"""The Grafana folder and datasource uids, and the two datasources (ClickHouse, Prometheus).

Built from server URLs (defaults: the docker-compose hosts of infra/settings.py) in the body
of ``POST /api/datasources``; the uids here are the ones every dashboard panel refers to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

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
Json = dict[str, Any]


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
