"""``candleflow up|down|status|install-jars``: the local services and their state."""

from __future__ import annotations

import json

import typer
from rich.console import Console

from infra.settings import get_settings
from jobs.cli.common import console, fail


def up(
    clickhouse: bool = typer.Option(
        False, "--clickhouse", help="also start a local ClickHouse 18.16 server (apt package)"
    ),
) -> None:
    """Start the local broker (Tansu) and Redis on loopback; idempotent.

    Ports and the state folder come from settings (CANDLEFLOW_KAFKA_BOOTSTRAP,
    CANDLEFLOW_REDIS_PORT, CANDLEFLOW_STATE_DIR; CANDLEFLOW_CLICKHOUSE_PORT/_HTTP_PORT).
    The local broker keeps its topics in memory: a restart loses them (use a real Kafka,
    e.g. the compose stack, for data that must survive it).
    """
    from infra.kafka import ensure_topics
    from infra.local import ServiceError, clickhouse_service, local_stack

    s = get_settings()
    try:
        for svc in local_stack(s):
            console.print(svc.start())
        console.print(
            "[yellow]note:[/] the local broker keeps topics and committed offsets in memory; "
            "stopping it loses them (acknowledged but unconsumed messages too)"
        )
        if clickhouse:
            ch = clickhouse_service(s)
            console.print(ch.start())
            from infra.settings import mask_url

            url = mask_url(ch.url_for("candleflow"))  # the password stays out of the output
            console.print(f"use it: CANDLEFLOW_CLICKHOUSE_URL={url}")
    except ServiceError as e:
        fail(str(e))
    ensure_topics(
        s.kafka_bootstrap,
        [
            s.topic_trades,
            s.topic_trades_dlq,
            s.topic_trades_late,
            s.topic_candles,
            s.topic_features,
            s.topic_features_dlq,
        ],
        partitions=s.topic_partitions,
    )
    console.print(f"state and logs: {s.state_dir}")


def down() -> None:
    """Stop the local broker and Redis (broker data is in memory and is lost), and the
    local ClickHouse server if it runs (its data stays in the state folder)."""
    from infra.local import clickhouse_service, local_stack

    ch = clickhouse_service(get_settings())
    if ch.pid():
        console.print(ch.stop())
    for svc in reversed(local_stack(get_settings())):
        console.print(svc.stop())


def status(
    as_json: bool = typer.Option(False, "--json", help="machine-readable output on stdout"),
    minutes: float = typer.Option(15.0, min=0.1, help="freshness window: last N minutes"),
) -> None:
    """Local services, topics + consumer-group lag, Flink cluster jobs, pipeline freshness.

    Every section says "not running"/"unreachable" when its service is down."""
    from infra.settings import redact
    from infra.status import collect, render

    settings = get_settings()
    # no password or token of the settings ever reaches the output, in a URL or an error
    report = json.loads(redact(json.dumps(collect(settings, minutes)), settings))
    if as_json:
        print(json.dumps(report, indent=2))
        return
    render(report, Console())


def install_jars() -> None:
    """Fetch the Flink Kafka connector jars into CANDLEFLOW_JARS_DIR (from PyPI) and build the
    project's Java functions (udfs/java) and the loopback-bind fix (infra/java) there."""
    from infra.jars import ensure_jars, flink_lib_dir, loopback_jar, udf_jar

    jars_dir = get_settings().jars_dir
    for p in [*ensure_jars(jars_dir), udf_jar(jars_dir), loopback_jar(jars_dir)]:
        console.print(f"ok {p}")
    for p in [flink_lib_dir(jars_dir)]:
        console.print(f"ok {p}")
