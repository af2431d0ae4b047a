"""``candleflow grafana ...``: dashboards as code (infra/grafana/) pushed to a Grafana."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from infra.grafana.datasources import GRAFANA_DIR
from infra.settings import get_settings

console = Console(stderr=True)
grafana_app = typer.Typer(
    help="Grafana: provision the candleflow folder, datasources and dashboards (infra/grafana/).",
    no_args_is_help=True,
)

_STYLE = {"created": "green", "updated": "yellow", "unchanged": "dim", "read-only": "magenta"}


@grafana_app.command("provision")
def provision_cmd(
    url: str = typer.Option(None, "--url", help="Grafana base URL (env: CANDLEFLOW_GRAFANA_URL)"),
    user: str = typer.Option(None, "--user", help="basic-auth user (env: CANDLEFLOW_GRAFANA_USER)"),
    password: str = typer.Option(
        None, "--password", help="basic-auth password (env: CANDLEFLOW_GRAFANA_PASSWORD)"
    ),
    token: str = typer.Option(
        None,
        "--token",
        help="service-account token instead of user/password (env: CANDLEFLOW_GRAFANA_TOKEN)",
    ),
    directory: Path = typer.Option(
        GRAFANA_DIR, "--dir", help="folder with dashboards/*.json", file_okay=False
    ),
    clickhouse_url: str = typer.Option(
        None,
        "--clickhouse-url",
        help="ClickHouse server as Grafana reaches it: clickhouse://[user[:pw]@]host:9000/db "
        "or http://host:8123 (env: CANDLEFLOW_GRAFANA_CLICKHOUSE_URL)",
    ),
    prometheus_url: str = typer.Option(
        None,
        "--prometheus-url",
        help="Prometheus as Grafana reaches it (env: CANDLEFLOW_GRAFANA_PROMETHEUS_URL)",
    ),
    timeout_s: float = typer.Option(10.0, "--timeout", help="seconds per HTTP request"),
) -> None:
    """Create or update the candleflow folder, datasources and dashboards (by uid).

    The folder `candleflow`, the ClickHouse and Prometheus datasources and every
    dashboards/*.json; idempotent: a second run reports everything unchanged.

    Exit code 2 when Grafana cannot be reached or refuses the credentials.
    """
    from infra.grafana.provision import ProvisionError, provision

    s = get_settings()
    if token is None and s.grafana_token is not None and user is None:
        token = s.grafana_token.get_secret_value()
    try:
        changes = provision(
            url or s.grafana_url,
            user=s.grafana_user if user is None else user,
            password=s.grafana_password.get_secret_value() if password is None else password,
            token=token or "",
            root=directory,
            clickhouse_url=clickhouse_url or s.grafana_clickhouse_url,
            prometheus_url=prometheus_url or s.grafana_prometheus_url,
            timeout_s=timeout_s,
        )
    except ProvisionError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(2) from None
    t = Table("kind", "uid", "title", "result", title=f"Grafana {url or s.grafana_url}")
    for c in changes:
        style = _STYLE.get(c.action, "")
        t.add_row(c.kind, c.uid, c.title, f"[{style}]{c.action}[/{style}]" if style else c.action)
    Console().print(t)
    counts = {a: sum(c.action == a for c in changes) for a in _STYLE}
    console.print(", ".join(f"{n} {a}" for a, n in counts.items() if n))
