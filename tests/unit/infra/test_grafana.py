"""Grafana as code (infra/grafana/) and `candleflow grafana provision`.

No Grafana binary runs here, so nothing is mocked at the Python level instead: the
provisioner talks real HTTP (grafana-client -> niquests -> a socket) to
:class:`FakeGrafana`, a stdlib ``ThreadingHTTPServer`` that implements the subset of
Grafana's HTTP API the provisioner uses (frontend settings, folders, datasources by uid,
dashboards/db, dashboards by uid), keeps its state in memory, checks basic-auth / bearer
credentials like Grafana (401 otherwise) and records every request. The ClickHouse panel
queries run on embedded ClickHouse (chDB) over the real migrations, after the plugin's
macros and the template variables are substituted as Grafana would (:func:`render`).
"""

from __future__ import annotations

import base64
import copy
import json
import re
import shutil
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from infra.grafana import build, pipeline, serving
from infra.grafana.datasources import CLICKHOUSE_PLUGIN, CLICKHOUSE_UID, FOLDER_UID, PROMETHEUS_UID
from infra.grafana.provision import ProvisionError, provision
from infra.settings import get_settings
from jobs.cli import app

Json = dict[str, Any]
DASHBOARD_FILES = sorted((build.GRAFANA_DIR / "dashboards").glob("*.json"))


# ------------------------------------------------------------------ a recording Grafana
@dataclass
class Request:
    method: str
    path: str
    auth: str | None
    body: Any


@dataclass
class FakeGrafana:
    """Grafana's HTTP API subset, state in memory; every request is recorded."""

    user: str = "admin"
    password: str = "s3cret"
    token: str = "glsa_test_token"
    html: bool = False  # answer like a web server that is not Grafana
    folders: dict[str, Json] = field(default_factory=dict)
    datasources: dict[str, Json] = field(default_factory=dict)
    dashboards: dict[str, Json] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    next_id: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def state(self) -> Json:
        with self.lock:
            return copy.deepcopy(
                {"folders": self.folders, "ds": self.datasources, "dash": self.dashboards}
            )

    def writes(self, since: int = 0) -> list[Request]:
        return [r for r in self.requests[since:] if r.method != "GET"]

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def _authorized(self, header: str | None) -> bool:
        basic = base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        return header in (f"Basic {basic}", f"Bearer {self.token}")

    def handle(self, method: str, path: str, auth: str | None, body: Any) -> tuple[int, Any]:
        with self.lock:
            self.requests.append(Request(method, path, auth, body))
            if not self._authorized(auth):
                return 401, {"message": "Invalid username or password"}
            return self._route(method, path.split("?")[0], body)

    def _route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if (method, path) == ("GET", "/api/frontend/settings"):
            return 200, {"buildInfo": {"version": "11.3.0", "edition": "Open Source"}}
        if m := re.fullmatch(r"/api/folders/([\w-]+)", path):
            uid = m.group(1)
            if uid not in self.folders:
                return 404, {"message": "folder not found", "status": "not-found"}
            if method == "PUT":
                self.folders[uid].update(title=body["title"])
                self.folders[uid]["version"] += 1
            return 200, self.folders[uid]
        if (method, path) == ("POST", "/api/folders"):
            if body["uid"] in self.folders:
                return 409, {"message": "a folder with the same uid already exists"}
            self.folders[body["uid"]] = {**body, "id": self._id(), "version": 1}
            return 200, self.folders[body["uid"]]
        if m := re.fullmatch(r"/api/datasources/uid/([\w-]+)", path):
            uid = m.group(1)
            if uid not in self.datasources:
                return 404, {"message": "Data source not found"}
            if method == "PUT":
                old = self.datasources[uid]
                self.datasources[uid] = self._stored_ds(body, old["id"], old["version"] + 1)
                return 200, {"datasource": self.datasources[uid], "message": "updated"}
            return 200, self.datasources[uid]
        if (method, path) == ("POST", "/api/datasources"):
            if body["uid"] in self.datasources or any(
                d["name"] == body["name"] for d in self.datasources.values()
            ):
                return 409, {"message": "data source with the same name already exists"}
            ds = self._stored_ds(body, self._id(), 1)
            self.datasources[body["uid"]] = ds
            return 200, {"datasource": ds, "id": ds["id"], "message": "Datasource added"}
        if m := re.fullmatch(r"/api/dashboards/uid/([\w-]+)", path):
            if m.group(1) not in self.dashboards:
                return 404, {"message": "Dashboard not found"}
            d = self.dashboards[m.group(1)]
            meta = {"folderUid": d["folderUid"], "version": d["dashboard"]["version"]}
            return 200, {"dashboard": d["dashboard"], "meta": meta}
        if (method, path) == ("POST", "/api/dashboards/db"):
            dash, folder = body["dashboard"], body.get("folderUid", "")
            if folder and folder not in self.folders:
                return 400, {"message": "folder not found"}
            old = self.dashboards.get(dash["uid"])
            if old is not None and not body.get("overwrite"):
                return 412, {"message": "A dashboard with the same uid already exists"}
            version = old["dashboard"]["version"] + 1 if old else 1
            stored = {
                **dash,
                "id": old["dashboard"]["id"] if old else self._id(),
                "version": version,
            }
            self.dashboards[dash["uid"]] = {"dashboard": stored, "folderUid": folder}
            return 200, {"id": stored["id"], "uid": dash["uid"], "status": "success",
                         "version": version, "url": f"/d/{dash['uid']}"}  # fmt: skip
        return 404, {"message": "Not found"}

    @staticmethod
    def _stored_ds(body: Json, ds_id: int, version: int) -> Json:
        """What Grafana returns for a datasource: no secrets, secureJsonFields instead."""
        plain = {k: v for k, v in body.items() if k not in ("secureJsonData", "id", "version")}
        secure = dict.fromkeys(body.get("secureJsonData") or {}, True)
        return {"url": "", "basicAuth": False, "orgId": 1, "readOnly": False, **plain,
                "id": ds_id, "version": version, "secureJsonFields": secure}  # fmt: skip


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def _serve(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        fake = self.server.fake
        if fake.html:
            data, status, ctype = b"<html>not grafana</html>", 200, "text/html"
        else:
            body = json.loads(raw) if raw else None
            status, out = fake.handle(self.command, self.path, self.headers["Authorization"], body)
            data, ctype = json.dumps(out).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeGrafana


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.fake = FakeGrafana()
    srv.fake.url = f"http://127.0.0.1:{srv.server_address[1]}"
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.fake
    srv.shutdown()
    srv.server_close()


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, ["grafana", "provision", *args])


def _login(g: FakeGrafana) -> list[str]:
    return ["--url", g.url, "--user", g.user, "--password", g.password]


# ----------------------------------------------------------------------- provisioning
def test_first_run_creates_everything_second_run_changes_nothing(grafana: FakeGrafana) -> None:
    res = _cli(*_login(grafana))
    assert res.exit_code == 0, res.output
    n = len(DASHBOARD_FILES)
    assert f"{n + 3} created" in res.output

    writes = grafana.writes()
    assert [(r.method, r.path) for r in writes] == [
        ("POST", "/api/folders"),
        ("POST", "/api/datasources"),
        ("POST", "/api/datasources"),
        *[("POST", "/api/dashboards/db")] * n,
    ]
    basic = "Basic " + base64.b64encode(b"admin:s3cret").decode()
    assert {r.auth for r in grafana.requests} == {basic}
    assert writes[0].body == {"title": "candleflow", "uid": FOLDER_UID}
    ch, pr = writes[1].body, writes[2].body
    assert (ch["uid"], ch["type"], ch["access"]) == (CLICKHOUSE_UID, CLICKHOUSE_PLUGIN, "proxy")
    assert ch["jsonData"] == {"host": "clickhouse", "port": 9000, "protocol": "native",
                              "secure": False, "username": "default",
                              "defaultDatabase": "default"}  # fmt: skip
    assert "secureJsonData" not in ch
    assert (pr["uid"], pr["type"], pr["url"]) == (
        PROMETHEUS_UID,
        "prometheus",
        "http://prometheus:9090",
    )
    files = {json.loads(f.read_text())["uid"]: json.loads(f.read_text()) for f in DASHBOARD_FILES}
    for r in writes[3:]:
        assert r.body["folderUid"] == FOLDER_UID and r.body["overwrite"] is True
        sent = {k: v for k, v in r.body["dashboard"].items() if k != "id"}
        assert sent == files[sent["uid"]]
    assert set(grafana.dashboards) == set(files)
    assert all(d["dashboard"]["version"] == 1 for d in grafana.dashboards.values())

    before, n_req = grafana.state(), len(grafana.requests)
    res = _cli(*_login(grafana))
    assert res.exit_code == 0, res.output
    assert f"{n + 3} unchanged" in res.output and "created" not in res.output
    assert grafana.writes(n_req) == []  # only GETs: no duplicate, no new version
    assert grafana.state() == before


def test_changes_are_updates_in_place(grafana: FakeGrafana, tmp_path: Path) -> None:
    provision(grafana.url, grafana.user, grafana.password)
    ids = {uid: d["dashboard"]["id"] for uid, d in grafana.dashboards.items()}
    ds_ids = {uid: d["id"] for uid, d in grafana.datasources.items()}

    # one dashboard edited, the ClickHouse server moved (http, with a password)
    root = tmp_path / "grafana"
    shutil.copytree(build.GRAFANA_DIR / "dashboards", root / "dashboards")
    f = root / "dashboards" / "trading.json"
    d = json.loads(f.read_text())
    d["title"] += " (edited)"
    f.write_text(json.dumps(d))
    n_req = len(grafana.requests)
    changes = provision(
        grafana.url, grafana.user, grafana.password, root=root,
        clickhouse_url="http://reader:pw@ch.internal:8123/?database=analytics",
    )  # fmt: skip
    actions = {(c.kind, c.uid): c.action for c in changes}
    assert actions[("dashboard", "candleflow-trading")] == "updated"
    assert actions[("datasource", CLICKHOUSE_UID)] == "updated"
    assert actions[("datasource", PROMETHEUS_UID)] == "unchanged"
    assert actions[("folder", FOLDER_UID)] == "unchanged"
    assert sum(a == "updated" for a in actions.values()) == 2
    writes = grafana.writes(n_req)
    assert [(r.method, r.path) for r in writes] == [
        ("PUT", f"/api/datasources/uid/{CLICKHOUSE_UID}"),
        ("POST", "/api/dashboards/db"),
    ]
    assert writes[0].body["jsonData"] == {
        "host": "ch.internal", "port": 8123, "protocol": "http", "secure": False,
        "username": "reader", "defaultDatabase": "analytics",
    }  # fmt: skip
    assert writes[0].body["secureJsonData"] == {"password": "pw"}
    # same uids and ids, the edited dashboard is version 2
    assert {uid: d["dashboard"]["id"] for uid, d in grafana.dashboards.items()} == ids
    assert {uid: d["id"] for uid, d in grafana.datasources.items()} == ds_ids
    assert grafana.dashboards["candleflow-trading"]["dashboard"]["version"] == 2
    # a password Grafana already holds (secureJsonFields) is not re-sent
    again = provision(
        grafana.url, grafana.user, grafana.password, root=root,
        clickhouse_url="http://reader:pw@ch.internal:8123/?database=analytics",
    )  # fmt: skip
    assert {c.action for c in again} == {"unchanged"}


def test_token_auth_and_settings_from_env(
    grafana: FakeGrafana, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CANDLEFLOW_GRAFANA_URL", grafana.url)
    monkeypatch.setenv("CANDLEFLOW_GRAFANA_TOKEN", grafana.token)
    monkeypatch.setenv("CANDLEFLOW_GRAFANA_PROMETHEUS_URL", "http://prom.example:9091")
    get_settings.cache_clear()
    try:
        res = _cli()
    finally:
        get_settings.cache_clear()
    assert res.exit_code == 0, res.output
    assert {r.auth for r in grafana.requests} == {f"Bearer {grafana.token}"}
    assert grafana.datasources[PROMETHEUS_UID]["url"] == "http://prom.example:9091"


def test_wrong_credentials_exit_2_without_changes(grafana: FakeGrafana) -> None:
    res = _cli("--url", grafana.url, "--user", "admin", "--password", "wrong")
    assert res.exit_code == 2
    assert "refused the credentials (401)" in res.output
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit)
    assert grafana.writes() == [] and len(grafana.requests) == 1


def test_unreachable_grafana_exit_2() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    res = _cli("--url", f"http://127.0.0.1:{port}", "--timeout", "2")
    assert res.exit_code == 2
    assert f"cannot reach Grafana at http://127.0.0.1:{port}" in res.output
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit)


def test_not_grafana_and_bad_urls_are_clean_errors(grafana: FakeGrafana) -> None:
    grafana.html = True
    with pytest.raises(ProvisionError, match="did not answer like Grafana"):
        provision(grafana.url, grafana.user, grafana.password)
    grafana.html = False
    res = _cli(*_login(grafana), "--clickhouse-url", "chdb:///tmp/x")
    assert res.exit_code == 2 and "embedded chDB" in res.output
    assert grafana.requests == []  # rejected before any request


def test_help() -> None:
    res = CliRunner().invoke(app, ["grafana", "provision", "--help"])
    assert res.exit_code == 0
    for opt in ("--url", "--user", "--password", "--token", "--dir", "--clickhouse-url"):
        assert opt in res.output


# ------------------------------------------------------------------ dashboard structure
def _dashboards() -> list[Json]:
    return [json.loads(f.read_text()) for f in DASHBOARD_FILES]


def _targets(d: Json) -> Iterator[tuple[Json, Json]]:
    for p in d["panels"]:
        for t in p["targets"]:
            yield p, t


def test_generated_files_are_up_to_date() -> None:
    for rel, text in build.rendered().items():
        assert (build.GRAFANA_DIR / rel).read_text() == text, (
            f"{rel}: run python -m infra.grafana.build"
        )
    assert {f.stem for f in DASHBOARD_FILES} == set(build.DASHBOARDS)


SUPPORTED_MACROS = {
    "timeFilter",
    "timeFilter_ms",
    "dateFilter",
    "timeInterval",
    "timeInterval_ms",
    "fromTime",
    "toTime",
    "fromTime_ms",
    "toTime_ms",
    "interval_s",
    "from",
    "to",
}  # fmt: skip  (from/to: Grafana globals)
DS_TYPES = {CLICKHOUSE_UID: CLICKHOUSE_PLUGIN, PROMETHEUS_UID: "prometheus"}


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.stem)
def test_dashboard_structure(path: Path) -> None:
    d = json.loads(path.read_text())
    assert d["uid"] == f"candleflow-{path.stem}" and len(d["uid"]) <= 40
    assert isinstance(d["schemaVersion"], int) and d["schemaVersion"] >= 36
    assert d["title"].startswith("candleflow / ") and "id" not in d and "version" not in d
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)) and ids
    cells: set[tuple[int, int]] = set()
    for p in d["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24 and g["h"] > 0
        area = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not area & cells, f"{p['title']} overlaps"
        cells |= area
        assert p["targets"], p["title"]
    variables = {v["name"] for v in d["templating"]["list"]}
    for v in d["templating"]["list"]:
        assert DS_TYPES[v["datasource"]["uid"]] == v["datasource"]["type"]
    for p, t in _targets(d):
        for ds in (p["datasource"], t["datasource"]):
            assert DS_TYPES[ds["uid"]] == ds["type"], p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert len(refs) == len(set(refs))
        if t["datasource"]["uid"] == CLICKHOUSE_UID:
            q = t["rawSql"]
            assert t["editorType"] == "sql" and t["format"] in (0, 1)
            for name, arg in re.findall(r"\$__(\w+)(?:\(([^)]*)\))?", q):
                assert name in SUPPORTED_MACROS, f"{p['title']}: $__{name}"
                assert not arg or re.fullmatch(r"\w+", arg), f"macro argument {arg!r}"
            used = set(re.findall(r"\$\{(\w+)\}|\$(?!__)(\w+)", q))
            assert {a or b for a, b in used} <= variables, p["title"]
            if t["format"] == 0:  # time series: the time column first
                assert re.match(r"SELECT (.*? AS )?time\b", q), p["title"]
        else:
            assert t["expr"] and "bentoml_service_request" in t["expr"]


def test_prometheus_metric_names_exist_in_bentoml() -> None:
    """The serving dashboard's metrics are the ones BentoML 1.4's middleware defines."""
    import bentoml._internal.server.http.instruments as instruments
    import yaml

    src = Path(instruments.__file__).read_text()
    for name in ("request_duration_seconds", "request_total", "request_in_progress"):
        assert f'name="{name}"' in src
    cfg = Path(instruments.__file__).parents[2] / "configuration/v2/default_configuration.yaml"
    namespace = yaml.safe_load(cfg.read_text())["services"]["metrics"]["namespace"]
    assert namespace == serving.BENTO == "bentoml_service"
    labels = {"le", "endpoint", "http_response_code"}  # the middleware's labels (+ le)
    for d in _dashboards():
        for _, t in _targets(d):
            for group in re.findall(r"by \(([^)]*)\)", t.get("expr", "")):
                assert {x.strip() for x in group.split(",")} <= labels, t["expr"]


# --------------------------------------------------- the SQL on embedded ClickHouse (chDB)
T0 = 1_704_151_800_000  # 2024-01-01 23:30:00 UTC: the bars cross midnight (2 P&L days)
MIN = 60_000
N_BARS = 40
FROM_MS, TO_MS = T0 - 3_600_000, T0 + 3 * 3_600_000
VARS = {"symbol": "BTCUSDT", "timeframe": "1m", "model_tag": "m1", "strategy": "cf1"}


def render(sql: str, variables: dict[str, str], from_ms: int = FROM_MS, to_ms: int = TO_MS,
           interval_s: int = 300) -> str:  # fmt: skip
    """Substitute what Grafana and the ClickHouse plugin substitute before the SQL reaches
    ClickHouse, with the plugin's own expansions (pkg/macros/macros.go, v4):

    * ``$__timeFilter(c)`` -> ``c >= toDateTime(FROM_S) AND c <= toDateTime(TO_S)``
      (``_ms``: ``fromUnixTimestamp64Milli``), ``$__dateFilter(c)`` with ``toDate('...')``;
    * ``$__timeInterval(c)`` -> ``toStartOfInterval(toDateTime(c), INTERVAL N second)``;
    * ``$__fromTime``/``$__toTime`` -> ``toDateTime(S)``, ``_ms`` -> DateTime64,
      ``$__interval_s`` -> N;
    * Grafana's globals ``$__from``/``$__to`` -> epoch ms; ``${var}``/``$var`` -> value.
    """
    fs, ts = from_ms // 1000, to_ms // 1000

    def macro(m: re.Match[str]) -> str:
        name, arg = m.group(1), m.group(2)
        match name:
            case "timeFilter":
                return f"{arg} >= toDateTime({fs}) AND {arg} <= toDateTime({ts})"
            case "timeFilter_ms":
                return (f"{arg} >= fromUnixTimestamp64Milli({from_ms}) AND "
                        f"{arg} <= fromUnixTimestamp64Milli({to_ms})")  # fmt: skip
            case "timeInterval":
                return f"toStartOfInterval(toDateTime({arg}), INTERVAL {interval_s} second)"
            case "fromTime":
                return f"toDateTime({fs})"
            case "toTime":
                return f"toDateTime({ts})"
            case "fromTime_ms":
                return f"fromUnixTimestamp64Milli({from_ms})"
            case "toTime_ms":
                return f"fromUnixTimestamp64Milli({to_ms})"
            case "interval_s":
                return str(interval_s)
            case "from":
                return str(from_ms)
            case "to":
                return str(to_ms)
        raise AssertionError(f"unsupported macro $__{name}")

    out = re.sub(r"\$__(\w+)(?:\(([^()]*)\))?", macro, sql)
    out = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables[m.group(1) or m.group(2)], out)
    assert "$" not in out, out
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from infra.clickhouse import connect
    from udfs.indicators import FEATURE_NAMES

    # chDB: one data path open per process; closed at the end of the module
    s = connect(f"chdb://{tmp_path_factory.mktemp('chdb_grafana')}?database=grafana")
    s.migrate()
    bars = [T0 + i * MIN for i in range(N_BARS)]
    closes = [100.0 + (i % 7) - (i % 3) * 0.5 for i in range(N_BARS)]
    base = [
        {"symbol": "BTCUSDT", "timeframe": "1m", "window_start_ms": b, "window_end_ms": b + MIN,
         "open": c - 0.2, "high": c + 1, "low": c - 1, "close": c, "volume": 10.0 + i,
         "vwap": c, "trade_count": 5 + i}
        for i, (b, c) in enumerate(zip(bars, closes, strict=True))
    ]  # fmt: skip
    s.insert("candles", [{**r, "quote_volume": r["volume"] * r["close"], "buy_volume": 6.0,
                          "sell_volume": 4.0, "first_trade_id": 0, "last_trade_id": 1,
                          "emitted_at": r["window_end_ms"] + 5_200} for r in base])  # fmt: skip
    s.insert("features", [{**r, **{f: float(i) for f in FEATURE_NAMES}, "features_ready": 1,
                           "event_time": r["window_end_ms"] - 1,
                           "computed_at": r["window_end_ms"] + 300 + i}
                          for i, r in enumerate(base)])  # fmt: skip
    preds = []
    for i, b in enumerate(bars):
        end = b + MIN
        preds.append({"symbol": "BTCUSDT", "timeframe": "1m", "bar_end_ms": end,
                      "model_tag": "m1", "p_down": 0.2, "p_flat": 0.3,
                      "p_up": (i % 10) / 10 + 0.05, "signal": [1.0, -1.0, 0.0][i % 3],
                      "status": "ok" if i % 5 else "degraded", "reason": None,
                      "latency_ms": 2.0 + i % 4, "predicted_at_ms": end + 40})  # fmt: skip
    s.insert("trading_predictions", preds)
    s.insert("trading_equity", [
        {"strategy": "cf1", "timeframe": "1m", "bar_end_ms": b + MIN, "cash": 900.0,
         "equity": 1000.0 + 3 * (i % 6) - i * 0.5, "gross": 100.0, "realized_pnl": i * 0.1,
         "fees_paid": i * 0.01, "killed": 0, "degraded": i % 5 == 0}
        for i, b in enumerate(bars)])  # fmt: skip
    fills = [
        {"strategy": "cf1", "timeframe": "1m", "client_order_id": f"o{i}", "symbol": sym,
         "bar_end_ms": T0 + (i + 1) * MIN, "side": "buy" if i % 2 == 0 else "sell",
         "qty": 0.1, "price": 100.0 + i, "fee": 0.01, "position_after": 0.1 * (i % 2 == 0),
         "avg_entry_after": 100.0, "realized_pnl": 0.5 * (i % 2), "cash_after": 900.0}
        for i, sym in enumerate(["BTCUSDT", "BTCUSDT", "ETHUSDT", "ETHUSDT", "BTCUSDT"])
    ]  # fmt: skip
    s.insert("trading_fills", fills)
    s.insert("trading_orders", [
        {k: f[k] for k in ("strategy", "timeframe", "client_order_id", "symbol", "bar_end_ms",
                            "side", "qty")} | {"decision_price": f["price"], "reason": "signal",
                                               "signal": 1.0, "status": "new"}
        for f in fills] + [
        {"strategy": "cf1", "timeframe": "1m", "client_order_id": "o9", "symbol": "BTCUSDT",
         "bar_end_ms": T0 + 9 * MIN, "side": "buy", "qty": 5.0, "decision_price": 100.0,
         "reason": "insufficient_cash", "signal": 1.0, "status": "rejected"}])  # fmt: skip
    fresh = []
    for k, stage in enumerate(pipeline.STAGES):
        for i, b in enumerate(bars):
            end = b + MIN
            lag = 50 * (k + 1) + i
            fresh.append(
                {
                    "stage": stage,
                    "symbol": "BTCUSDT",
                    "timeframe": "1m",
                    "window_end_ms": end,
                    "observed_at_ms": end + 5_000 + lag,
                    "lag_ms": lag,
                    "watermark_delay_ms": 5_000,
                    "observed_by": "test",
                }
            )
    fresh.append(
        {
            **fresh[0],
            "observed_at_ms": fresh[0]["observed_at_ms"] + 9_000,
            "lag_ms": fresh[0]["lag_ms"] + 9_000,
        }
    )  # a re-delivery: not "first seen"
    s.insert("pipeline_freshness", fresh)  # fmt: skip
    yield s
    s.close()


# the columns each ClickHouse query returns, by dashboard and panel title
EXPECTED_COLUMNS: dict[str, dict[str, list[str]]] = {
    "candleflow-pipeline": {
        "Lag per stage (first observation per bar, time range)":
            ["stage", "bars", "p50_ms", "p95_ms", "p99_ms", "max_ms"],
        "Lag p50 per stage": ["time", "stage", "lag_ms"],
        "Lag p95 per stage": ["time", "stage", "lag_ms"],
        "Lag p99 per stage": ["time", "stage", "lag_ms"],
        "Observations per stage": ["time", "stage", "observations"],
        "Feature computation lag (features.computed_at - window_end)":
            ["time", "p50_ms", "p99_ms", "max_ms"],
        "Feature freshness per symbol (feature_freshness, all time)":
            ["symbol", "timeframe", "last_window_end", "age_s", "last_ready_window_end",
             "max_lag_ms", "rows_written"],
    },
    "candleflow-predictions": {
        "Scored predictions vs outcome (time range)":
            ["scored", "signals", "signal_hit_rate", "p_up_hit_rate", "ic_p_up_next_return"],
        "p_up and signal vs realized next-bar return": ["time", "p_up", "signal", "next_return"],
        "Calibration: realized up-fraction per p_up bin":
            ["p_up_bin", "n", "mean_p_up", "frac_up", "mean_next_return"],
        "Predictions by status (ok / refused / degraded)": ["time", "status", "predictions"],
        "Scoring latency (strategy -> /score)": ["time", "p50_ms", "p99_ms"],
    },
    "candleflow-prices": {
        "Summary": ["last_close", "bars", "trades", "volume"],
        "OHLC + volume (candles)": ["time", "open", "high", "low", "close", "volume"],
        "Close, moving averages, Bollinger bands (features)":
            ["time", "close", "sma_20", "sma_50", "ema_12", "ema_26", "bb_20_2_upper",
             "bb_20_2_lower"],
        "RSI / MFI / stochastic": ["time", "rsi_14", "mfi_14", "stoch_14_3_3_k", "stoch_14_3_3_d"],
        "MACD (12, 26, 9)":
            ["time", "macd_12_26_9_line", "macd_12_26_9_signal", "macd_12_26_9_hist"],
        "Buy / sell volume": ["time", "buy_volume", "sell_volume"],
        "Volatility: ATR, realized vol, Bollinger width":
            ["time", "atr_14", "rv_30", "bb_20_2_width"],
    },
    "candleflow-trading": {
        "Account (last snapshot in range)":
            ["last_equity", "last_gross", "last_realized_pnl", "last_fees_paid",
             "return_in_range", "killed", "degraded"],
        "Equity, gross exposure, cash": ["time", "equity", "gross", "cash"],
        "Realized P&L and fees (cumulative)": ["time", "realized_pnl", "fees_paid"],
        "Drawdown": ["time", "drawdown"],
        "Position per symbol (after each fill)": ["time", "symbol", "position"],
        "Open positions (all fills)":
            ["symbol", "position", "avg_entry", "realized_pnl", "fees", "fills"],
        "Daily P&L (pnl_daily)": ["date", "pnl", "realized_pnl", "fees_paid"],
        "Orders by status and reason (time range)": ["status", "reason", "side", "orders", "qty"],
        "Fills (latest 500 in range)":
            ["time", "symbol", "side", "qty", "price", "fee", "position_after",
             "avg_entry_after", "realized_pnl", "cash_after", "client_order_id"],
    },
}  # fmt: skip


def _panel_rows(store: Any, dash: str, title: str) -> Any:
    d = next(d for d in _dashboards() if d["uid"] == dash)
    p = next(p for p in d["panels"] if p["title"] == title)
    return store.query_df(render(p["targets"][0]["rawSql"], VARS))


def _ch_queries() -> list[Any]:
    out = []
    for d in _dashboards():
        for p, t in _targets(d):
            if t["datasource"]["uid"] == CLICKHOUSE_UID:
                pid = f"{d['uid'].removeprefix('candleflow-')}-{p['id']}"
                out.append(pytest.param(d["uid"], p["title"], t["rawSql"], t["format"], id=pid))
    return out


@pytest.mark.parametrize(("dash", "title", "sql", "fmt"), _ch_queries())
def test_clickhouse_panel_query_runs(store: Any, dash: str, title: str, sql: str, fmt: int) -> None:
    df = store.query_df(render(sql, VARS))
    assert len(df) > 0, f"{dash} / {title}: no rows"
    cols = list(df.columns)
    assert cols == EXPECTED_COLUMNS[dash][title]
    if fmt == 0:
        assert cols[0] == "time" and str(df["time"].dtype).startswith("datetime64")
        assert any(str(df[c].dtype).startswith(("float", "int", "uint")) for c in cols[1:])


def test_every_clickhouse_panel_has_expected_columns() -> None:
    listed = {(d, t) for d, panels in EXPECTED_COLUMNS.items() for t in panels}
    assert {(p.values[0], p.values[1]) for p in _ch_queries()} == listed


def test_template_variable_queries(store: Any) -> None:
    want = {"symbol": "BTCUSDT", "timeframe": "1m", "model_tag": "m1", "strategy": "cf1"}
    for d in _dashboards():
        for v in d["templating"]["list"]:
            rows = store.query(render(v["query"], VARS))
            assert [list(r.values()) for r in rows] == [[want[v["name"]]]], (d["uid"], v["name"])


def test_query_values(store: Any) -> None:
    """A few panels checked against the rows inserted above."""
    lag = _panel_rows(store, "candleflow-pipeline",
                      "Lag per stage (first observation per bar, time range)")  # fmt: skip
    assert list(lag["stage"]) == list(pipeline.STAGES)  # pipeline order, not alphabetical
    assert list(lag["bars"]) == [N_BARS] * 4
    # first observation per bar: the re-delivered candle (lag + 9 s) does not count
    assert list(lag["max_ms"]) == [50 * (k + 1) + N_BARS - 1 for k in range(4)]

    out = _panel_rows(
        store, "candleflow-predictions", "p_up and signal vs realized next-bar return"
    )
    closes = [100.0 + (i % 7) - (i % 3) * 0.5 for i in range(N_BARS)]
    # bars 0..38 have a next bar; every 5th prediction is degraded (not status ok)
    expected = [closes[i + 1] / closes[i] - 1 for i in range(N_BARS - 1) if i % 5]
    assert out["next_return"].tolist() == pytest.approx(expected)

    daily = _panel_rows(store, "candleflow-trading", "Daily P&L (pnl_daily)")
    assert list(daily["date"]) == ["2024-01-01", "2024-01-02"]
    eq = [1000.0 + 3 * (i % 6) - i * 0.5 for i in range(N_BARS)]
    # bars ending up to 2024-01-02 00:00 belong to 2024-01-01 (bar_end_ms - 1)
    day1 = eq[:30]
    assert daily["pnl"].tolist() == pytest.approx([day1[-1] - day1[0], eq[-1] - day1[-1]])

    pos = _panel_rows(store, "candleflow-trading", "Open positions (all fills)")
    assert pos.set_index("symbol")["position"].to_dict() == {"BTCUSDT": 0.1, "ETHUSDT": 0.0}
