"""Push the candleflow folder, datasources and dashboards to a Grafana over its HTTP API.

Idempotent: the folder, the datasources and the dashboards are found by their stable uids
and created when missing, updated when different, left alone when equal, so a second run
changes nothing (no new dashboard versions). Every failure to reach Grafana or to be let in
is a :class:`ProvisionError` with a one-line message (the CLI exits 2 with it).

Datasource passwords cannot be compared (Grafana never returns ``secureJsonData``): a
datasource whose password field is not yet set is updated, a changed password is not seen.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import niquests
from grafana_client import GrafanaApi
from grafana_client.client import (
    GrafanaClientError,
    GrafanaException,
    GrafanaServerError,
    GrafanaUnauthorizedError,
)

from infra.grafana.datasources import FOLDER_TITLE, FOLDER_UID, GRAFANA_DIR, datasources

Json = dict[str, Any]
# keys Grafana adds to a stored dashboard; everything else is what we sent
_DASHBOARD_SERVER_KEYS = ("id", "version")


class ProvisionError(RuntimeError):
    """Grafana unreachable, credentials refused, or a request rejected."""


@dataclass(frozen=True)
class Change:
    kind: str  # folder | datasource | dashboard
    uid: str
    title: str
    action: str  # created | updated | unchanged | read-only


def load_dashboards(root: Path = GRAFANA_DIR) -> list[Json]:
    """``root/dashboards/*.json``, sorted by file name; each must have a uid and a title."""
    files = sorted((root / "dashboards").glob("*.json"))
    if not files:
        raise ProvisionError(f"no dashboards in {root / 'dashboards'}")
    out = []
    for f in files:
        try:
            d = json.loads(f.read_text())
        except json.JSONDecodeError as e:
            raise ProvisionError(f"{f}: not JSON: {e}") from e
        if not isinstance(d, dict) or not d.get("uid") or not d.get("title"):
            raise ProvisionError(f"{f}: a dashboard needs a uid and a title")
        out.append(d)
    return out


def _subset(want: Any, have: Any) -> bool:
    """``want`` is contained in ``have`` (dicts: every key of want, recursively)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(
            k in have and _subset(v, have[k]) for k, v in want.items()
        )
    return bool(want == have)


def _auth(user: str, password: str, token: str) -> str | tuple[str, str] | None:
    if token:
        return token
    if user:
        return (user, password)
    return None


class Provisioner:
    def __init__(
        self,
        url: str,
        user: str = "",
        password: str = "",
        token: str = "",
        timeout_s: float = 10.0,
    ) -> None:
        self.url = url.rstrip("/")
        self.api = GrafanaApi.from_url(self.url, _auth(user, password, token), timeout_s)

    # --- one guarded call ----------------------------------------------------------------
    def _error(self, what: str, e: Exception) -> ProvisionError | None:
        """The one-line error for a failed request (None: not a request failure)."""
        if isinstance(e, GrafanaUnauthorizedError):
            return ProvisionError(
                f"Grafana at {self.url} refused the credentials (401) while {what}: check "
                "--user/--password or --token (CANDLEFLOW_GRAFANA_USER/_PASSWORD/_TOKEN)"
            )
        if isinstance(e, GrafanaClientError) and e.status_code == 403:
            return ProvisionError(
                f"Grafana at {self.url} denied {what} (403): the user or token needs the "
                "Admin role (or Editor with datasource write permission)"
            )
        if isinstance(e, GrafanaClientError | GrafanaServerError):
            return ProvisionError(f"Grafana at {self.url}: {what} failed: {e.message}")
        if isinstance(e, GrafanaException | niquests.exceptions.RequestException):
            msg = getattr(e, "message", None) or str(e)
            reason = re.search(r"\[Errno[^\]]*\][^'\")]*|timed out|Name or service not known", msg)
            return ProvisionError(
                f"cannot reach Grafana at {self.url}: {reason.group(0) if reason else msg}"
            )
        if isinstance(e, ValueError | AttributeError):  # an answer that is not Grafana JSON
            return ProvisionError(f"{self.url} did not answer like Grafana while {what}: {e}")
        return None

    def _call(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception as e:
            err = self._error(what, e)
            if err is None:
                raise
            raise err from e

    def _get(self, what: str, fn: Callable[[str], Any], uid: str) -> Json | None:
        """A GET by uid; None when Grafana answers 404."""
        try:
            out = fn(uid)
        except GrafanaClientError as e:
            if e.status_code == 404:
                return None
            raise self._error(what, e) or e from e
        except Exception as e:
            err = self._error(what, e)
            if err is None:
                raise
            raise err from e
        if not isinstance(out, dict):
            raise ProvisionError(f"{self.url} did not answer like Grafana while {what}")
        return out

    # --- steps ---------------------------------------------------------------------------
    def check(self) -> str:
        """Reach Grafana with the credentials; returns its version."""
        info = self._call("reading /api/frontend/settings", self.api.health.check)
        if not isinstance(info, dict):
            raise ProvisionError(f"{self.url} did not answer like Grafana (no buildInfo)")
        return str(info.get("version", "?"))

    def folder(self, uid: str = FOLDER_UID, title: str = FOLDER_TITLE) -> Change:
        have = self._get(f"reading folder {uid}", self.api.folder.get_folder, uid)
        if have is None:
            self._call(f"creating folder {uid}", self.api.folder.create_folder, title, uid)
            return Change("folder", uid, title, "created")
        if have.get("title") == title:
            return Change("folder", uid, title, "unchanged")
        self._call(
            f"updating folder {uid}",
            lambda: self.api.folder.update_folder(uid, title=title, overwrite=True),
        )
        return Change("folder", uid, title, "updated")

    def datasource(self, ds: Json) -> Change:
        uid, name = ds["uid"], ds["name"]
        have = self._get(
            f"reading datasource {uid}", self.api.datasource.get_datasource_by_uid, uid
        )
        if have is None:
            self._call(f"creating datasource {uid}", self.api.datasource.create_datasource, ds)
            return Change("datasource", uid, name, "created")
        plain = {k: v for k, v in ds.items() if k != "secureJsonData"}
        secrets_set = set(ds.get("secureJsonData", {})) <= {
            k for k, v in (have.get("secureJsonFields") or {}).items() if v
        }
        if _subset(plain, have) and secrets_set:
            return Change("datasource", uid, name, "unchanged")
        if have.get("readOnly"):  # provisioned from a file: the API may not change it
            return Change("datasource", uid, name, "read-only")
        self._call(
            f"updating datasource {uid}",
            self.api.datasource.update_datasource_by_uid,
            uid,
            {**ds, "id": have.get("id"), "version": have.get("version")},
        )
        return Change("datasource", uid, name, "updated")

    def dashboard(self, dash: Json, folder_uid: str = FOLDER_UID) -> Change:
        uid, title = dash["uid"], dash["title"]
        have = self._get(f"reading dashboard {uid}", self.api.dashboard.get_dashboard, uid)
        want = {k: v for k, v in dash.items() if k not in _DASHBOARD_SERVER_KEYS}
        if have is not None:
            stored = {
                k: v
                for k, v in (have.get("dashboard") or {}).items()
                if k not in _DASHBOARD_SERVER_KEYS
            }
            if stored == want and (have.get("meta") or {}).get("folderUid") == folder_uid:
                return Change("dashboard", uid, title, "unchanged")
        self._call(
            f"saving dashboard {uid}",
            self.api.dashboard.update_dashboard,
            {
                "dashboard": {**want, "id": None},
                "folderUid": folder_uid,
                "overwrite": True,
                "message": "candleflow grafana provision",
            },
        )
        return Change("dashboard", uid, title, "created" if have is None else "updated")

    def run(self, dashboards: list[Json], sources: list[Json]) -> list[Change]:
        self.check()
        changes = [self.folder()]
        changes += [self.datasource(ds) for ds in sources]
        changes += [self.dashboard(d) for d in dashboards]
        return changes


def provision(
    url: str,
    user: str = "",
    password: str = "",
    token: str = "",
    root: Path = GRAFANA_DIR,
    clickhouse_url: str | None = None,
    prometheus_url: str | None = None,
    timeout_s: float = 10.0,
) -> list[Change]:
    """Folder + datasources (for the given server URLs) + ``root/dashboards/*.json``."""
    dashboards = load_dashboards(root)
    kwargs = {
        k: v
        for k, v in (("clickhouse_url", clickhouse_url), ("prometheus_url", prometheus_url))
        if v
    }
    try:
        sources = datasources(**kwargs)
    except ValueError as e:
        raise ProvisionError(str(e)) from e
    return Provisioner(url, user, password, token, timeout_s).run(dashboards, sources)
