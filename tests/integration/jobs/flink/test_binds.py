"""Nothing the project starts listens beyond loopback by default: a job's local MiniCluster
(REST/UI, RPC, BLOB; Flink's own default is every interface) and the local broker and
Redis of `candleflow up`."""

from __future__ import annotations

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
    """REST, RPC and BLOB of the JVM, and the Python-UDF machinery: the Beam fn-API gRPC
    servers of each Python operator in the JVM (control, data, state, logging, ...; Flink's
    own build binds them to every interface) and the loopback worker pool in this process
    (PyFlink's binds to every interface). The UDF really runs: its results come back. The
    worker pool is started once per process, possibly by an earlier test, so every listener
    of this process is checked, not only the new ones."""
    from pyflink.table import DataTypes
    from pyflink.table.udf import udf

    from jobs.flink.env import table_env

    t_env = table_env(Settings(state_dir=tmp_path), "binds-check")
    t_env.create_temporary_function(
        "plus_one", udf(lambda x: x + 1, result_type=DataTypes.BIGINT())
    )
    t_env.execute_sql(
        "CREATE TEMPORARY TABLE src (x BIGINT) WITH ('connector'='datagen', "
        "'rows-per-second'='20', 'fields.x.kind'='sequence', 'fields.x.start'='1', "
        "'fields.x.end'='1000000')"
    )
    result = t_env.execute_sql("SELECT x, plus_one(x) FROM src")
    try:
        with result.collect() as rows:
            got = [tuple(next(rows)) for _ in range(5)]
            assert all(y == x + 1 for x, y in got), got
            jvm = listening(jvm_pids())
            mine = listening({psutil.Process().pid})
    finally:
        client = result.get_job_client()
        if client is not None:
            client.cancel().result()
    assert len(jvm) >= 7, jvm  # REST, RPC, BLOB + >= 4 Beam servers
    assert mine, "no listener (loopback worker pool) in this process"
    assert all(loopback(a) for a in jvm), jvm
    assert all(loopback(a) for a in mine), mine


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
