"""Nothing the project starts listens beyond loopback by default: a job's local MiniCluster
(REST/UI, RPC, BLOB; Flink's own default is every interface) and the local broker and
Redis of `candleflow up`."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest

from infra.local import free_port, local_stack
from infra.settings import Settings

pytestmark = pytest.mark.integration


def listening(pids: set[int]) -> list[str]:
    """``ip:port`` of every TCP socket in LISTEN state owned by ``pids``."""
    out = []
    for pid in pids:
        for c in psutil.Process(pid).net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN:
                out.append(f"{c.laddr.ip}:{c.laddr.port}")
    return out


def loopback(addr: str) -> bool:
    ip = addr.rsplit(":", 1)[0]
    return ip.startswith("127.") or ip in ("::1", "::ffff:127.0.0.1")


def jvm_pids() -> set[int]:
    me = psutil.Process()
    return {p.pid for p in me.children(recursive=True) if "java" in p.name()}


def test_minicluster_listens_on_loopback_only(tmp_path: Path) -> None:
    from jobs.flink_env import table_env

    t_env = table_env(Settings(state_dir=tmp_path), "binds-check")
    t_env.execute_sql(
        "CREATE TEMPORARY TABLE src (x BIGINT) WITH ('connector'='datagen', 'rows-per-second'='10')"
    )
    t_env.execute_sql("CREATE TEMPORARY TABLE snk (x BIGINT) WITH ('connector'='blackhole')")
    result = t_env.execute_sql("INSERT INTO snk SELECT x FROM src")
    try:
        deadline = time.monotonic() + 60
        addrs: list[str] = []
        while time.monotonic() < deadline:  # REST, RPC and BLOB are up once the job runs
            addrs = listening(jvm_pids())
            if len(addrs) >= 3:
                break
            time.sleep(1)
        assert len(addrs) >= 3, addrs
        assert all(loopback(a) for a in addrs), addrs
    finally:
        client = result.get_job_client()
        if client is not None:
            client.cancel().result()


def test_local_stack_listens_on_loopback_only(tmp_path: Path) -> None:
    s = Settings(
        state_dir=tmp_path, kafka_bootstrap=f"127.0.0.1:{free_port()}", redis_port=free_port()
    )
    services = local_stack(s)
    try:
        for svc in services:
            svc.start()
        pids = {svc.pid() for svc in services}
        addrs = listening({p for p in pids if p})
        assert len(addrs) >= 2 and all(loopback(a) for a in addrs), addrs
    finally:
        for svc in reversed(services):
            svc.stop()
