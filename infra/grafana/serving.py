"""The ``candleflow-serving`` dashboard: the BentoML predictor's request metrics (latency,
rate, errors, in flight) from Prometheus' scrape of its /metrics.
"""

from __future__ import annotations

from infra.grafana.datasources import Json
from infra.grafana.panels import TS_BARS, TS_LINES, dashboard, panel, prom, stat_opts

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
