"""A real standalone Flink session cluster, started from the distribution that the
``apache-flink`` wheel ships (``pyflink/bin/jobmanager.sh``, ``taskmanager.sh``, ``flink``).

Config, logs and pid files are generated under ``<state_dir>/flink``; nothing is written
into site-packages. Jobs are submitted with ``flink run -py``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from infra.settings import Settings, settings_env

log = logging.getLogger(__name__)


def flink_home() -> Path:
    import pyflink

    return Path(pyflink.__file__).resolve().parent


class FlinkCluster:
    def __init__(self, settings: Settings):
        self.s = settings
        self.home = flink_home()
        self.dir = settings.state_dir / "flink"
        self.conf_dir = self.dir / "conf"

    # ------------------------------------------------------------------ config + env
    @property
    def rest_url(self) -> str:
        return f"http://{self.jobmanager}"

    @property
    def jobmanager(self) -> str:
        """REST HOST:PORT of the JobManager: CANDLEFLOW_FLINK_JOBMANAGER or the local one."""
        return self.s.flink_jobmanager or f"127.0.0.1:{self.s.flink_rest_port}"

    def ensure_client_conf(self) -> None:
        """`flink run` needs a FLINK_CONF_DIR; against a remote JobManager no local cluster
        may ever have written one (:meth:`start` does)."""
        if not (self.conf_dir / "config.yaml").exists():
            self.write_conf()

    def write_conf(self) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        src = self.home / "conf"
        for f in src.iterdir():
            if f.name != "config.yaml":
                shutil.copy2(f, self.conf_dir / f.name)
        conf: dict[str, Any] = yaml.safe_load((src / "config.yaml").read_text())
        flat = {
            "jobmanager.rpc.address": "127.0.0.1",
            "jobmanager.bind-host": "127.0.0.1",
            "jobmanager.rpc.port": self.s.flink_rpc_port,
            "jobmanager.memory.process.size": self.s.flink_jm_memory,
            "taskmanager.bind-host": "127.0.0.1",
            "taskmanager.host": "127.0.0.1",
            "taskmanager.numberOfTaskSlots": self.s.flink_slots_per_tm,
            "taskmanager.memory.process.size": self.s.flink_tm_memory,
            "rest.address": "127.0.0.1",
            "rest.bind-address": "127.0.0.1",
            "rest.port": self.s.flink_rest_port,
            "blob.server.port": "0",
            "heartbeat.interval": self.s.flink_heartbeat_interval_ms,
            "heartbeat.timeout": self.s.flink_heartbeat_timeout_ms,
            "parallelism.default": self.s.parallelism,
            "table.local-time-zone": "UTC",
            "python.executable": sys.executable,
            "python.client.executable": sys.executable,
        }
        for key, value in flat.items():
            node = conf
            *parents, leaf = key.split(".")
            for p in parents:
                nxt = node.get(p)
                if not isinstance(nxt, dict):
                    nxt = {}
                    node[p] = nxt
                node = nxt
            node[leaf] = value
        (self.conf_dir / "config.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))

    def env(self) -> dict[str, str]:
        logs = self.s.logs_dir / "flink-cluster"
        logs.mkdir(parents=True, exist_ok=True)
        (self.dir / "pids").mkdir(parents=True, exist_ok=True)
        return os.environ | {
            "FLINK_HOME": str(self.home),
            "FLINK_CONF_DIR": str(self.conf_dir),
            "FLINK_LOG_DIR": str(logs),
            "FLINK_PID_DIR": str(self.dir / "pids"),
            "PYFLINK_CLIENT_EXECUTABLE": sys.executable,
        }

    def _bin(self, script: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = ["bash", str(self.home / "bin" / script), *args]
        return subprocess.run(cmd, env=self.env(), check=check, capture_output=True, text=True)

    # ------------------------------------------------------------------ REST
    def rest(self, path: str, timeout: float = 2.0) -> Any:
        with urllib.request.urlopen(self.rest_url + path, timeout=timeout) as r:
            return json.loads(r.read())

    def overview(self) -> dict[str, Any] | None:
        try:
            return dict(self.rest("/overview"))
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def status(self) -> str:
        ov = self.overview()
        if ov is None:
            return f"stopped (no REST at {self.rest_url})"
        return (
            f"running at {self.rest_url}: {ov['taskmanagers']} TaskManagers, "
            f"{ov['slots-available']}/{ov['slots-total']} slots free, "
            f"jobs running {ov['jobs-running']}, finished {ov['jobs-finished']}, "
            f"failed {ov['jobs-failed']}"
        )

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout_s: float = 90.0) -> str:
        want = self.s.flink_taskmanagers
        ov = self.overview()
        if ov and ov["taskmanagers"] >= want:
            return "flink: already " + self.status()
        from infra.local import port_open

        if ov is None and port_open("127.0.0.1", self.s.flink_rest_port):
            raise RuntimeError(f"flink: port {self.s.flink_rest_port} is taken by another process")
        self.write_conf()
        t0 = time.monotonic()
        if ov is None:
            self._bin("jobmanager.sh", "start")
        have = ov["taskmanagers"] if ov else 0
        for _ in range(want - have):
            self._bin("taskmanager.sh", "start")
        while time.monotonic() - t0 < timeout_s:
            ov = self.overview()
            if ov and ov["taskmanagers"] >= want:
                return f"flink: started in {time.monotonic() - t0:.1f}s, " + self.status()
            time.sleep(0.5)
        raise RuntimeError(
            f"flink: cluster not up after {timeout_s:.0f}s; logs in {self.env()['FLINK_LOG_DIR']}"
        )

    def stop(self) -> str:
        if not self.conf_dir.exists():
            return "flink: not running"
        self._bin("taskmanager.sh", "stop-all", check=False)
        self._bin("jobmanager.sh", "stop-all", check=False)
        return "flink: stopped"

    def add_taskmanager(self) -> None:
        """Start one more TaskManager process (e.g. to replace a lost one)."""
        if not self.conf_dir.exists():
            self.write_conf()
        self._bin("taskmanager.sh", "start")

    def taskmanager_pids(self) -> list[int]:
        pids: list[int] = []
        for f in (self.dir / "pids").glob("*taskexecutor*.pid"):
            pids += [int(x) for x in f.read_text().split()]
        return pids

    # ------------------------------------------------------------------ jobs
    def jobs(self) -> list[dict[str, Any]]:
        """``/jobs/overview``: jid, name, state, start-time, ... (newest first)."""
        jobs = list(self.rest("/jobs/overview")["jobs"])
        return sorted(jobs, key=lambda j: -int(j.get("start-time", 0)))

    def find_job(self, name_or_id: str) -> dict[str, Any]:
        """The newest job whose id or name is ``name_or_id`` (running ones first)."""
        jobs = [j for j in self.jobs() if name_or_id in (j["jid"], j["name"])]
        if not jobs:
            raise LookupError(f"no job {name_or_id!r} on {self.rest_url}")
        running = [j for j in jobs if j["state"] == "RUNNING"]
        return (running or jobs)[0]

    def checkpoints(self, job_id: str) -> dict[str, Any]:
        """Completed/failed/restored counts and the latest completed checkpoint's path."""
        cp = self.rest(f"/jobs/{job_id}/checkpoints")
        latest = (cp.get("latest") or {}).get("completed") or {}
        restored = (cp.get("latest") or {}).get("restored") or {}
        counts = cp.get("counts") or {}
        return {
            "completed": int(counts.get("completed", 0)),
            "failed": int(counts.get("failed", 0)),
            "restored": int(counts.get("restored", 0)),
            "latest_path": latest.get("external_path"),
            "latest_id": latest.get("id"),
            "restored_from": restored.get("external_path"),
        }

    def savepoint(
        self,
        job_id: str,
        *,
        stop: bool = False,
        drain: bool = False,
        target: Path | None = None,
        timeout_s: float = 120,
    ) -> str:
        """Trigger a savepoint (``stop``: stop-with-savepoint, the job ends FINISHED;
        ``drain``: first advance the watermark to the end, firing every open window) and
        wait for it; returns its path (resume with ``flink run -s PATH``)."""
        target = target or self.s.savepoints_home
        target.mkdir(parents=True, exist_ok=True)
        if stop or drain:
            body = {"targetDirectory": target.as_uri(), "drain": drain}
            trigger = self._post(f"/jobs/{job_id}/stop", body)
        else:
            body2 = {"target-directory": target.as_uri(), "cancel-job": False}
            trigger = self._post(f"/jobs/{job_id}/savepoints", body2)
        rid = trigger["request-id"]
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            st = self.rest(f"/jobs/{job_id}/savepoints/{rid}")
            if st["status"]["id"] == "COMPLETED":
                op = st.get("operation") or {}
                if "location" in op:
                    return str(op["location"])
                cause = op.get("failure-cause") or {}
                raise RuntimeError(f"savepoint failed: {cause.get('stack-trace', op)[:2000]}")
            time.sleep(0.5)
        raise TimeoutError(f"savepoint of {job_id} not done after {timeout_s:.0f} s")

    def cancel(self, job_id: str) -> None:
        req = urllib.request.Request(self.rest_url + f"/jobs/{job_id}", method="PATCH")
        with urllib.request.urlopen(req, timeout=10):
            pass

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        req = urllib.request.Request(
            self.rest_url + path,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def run_py(
        self,
        script: Path,
        args: list[str],
        *,
        detach: bool = False,
        settings_for_job: Settings | None = None,
        timeout_s: float | None = None,
        from_savepoint: str | None = None,
    ) -> int:
        """``flink run -py script args``; the job sees ``settings_for_job`` via env;
        ``from_savepoint``: ``flink run -s PATH`` (a savepoint or retained checkpoint)."""
        cmd = [
            "bash",
            str(self.home / "bin" / "flink"),
            "run",
            "-m",
            self.jobmanager,
            "-py",
            str(script),
            "-pyclientexec",
            sys.executable,
            "-pyexec",
            (settings_for_job or self.s).flink_python_executable or sys.executable,
        ]
        if detach:
            cmd.insert(3, "-d")
            if "--detach" not in args:  # else the job script waits for the job's end
                args = [*args, "--detach"]
        if from_savepoint:
            cmd[3:3] = ["-s", from_savepoint]
        env = self.env() | settings_env(settings_for_job or self.s)
        log.info("submitting: %s", " ".join(cmd + args))
        proc = subprocess.run(
            cmd + args, env=env, timeout=timeout_s, capture_output=True, text=True
        )
        if proc.returncode != 0:
            log.error(
                "flink run failed (%s):\n%s\n%s",
                proc.returncode,
                proc.stdout[-4000:],
                proc.stderr[-4000:],
            )
        return proc.returncode
