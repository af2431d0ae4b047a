"""Create a PyFlink TableEnvironment configured the project's way (UTC, jars, logs)."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.jars import flink_lib_dir, pipeline_jars
from infra.kafka import BrokerReset
from infra.settings import Settings

if TYPE_CHECKING:
    from infra.connectors import Endpoints

log = logging.getLogger(__name__)


def _python_path_for_thread_mode() -> None:
    """Thread mode runs UDFs in a CPython embedded in the JVM (pemja), which sees neither this
    venv nor the repo unless PYTHONPATH names them before the JVM starts."""
    import site

    from infra.settings import REPO_ROOT

    parts = [str(REPO_ROOT), *site.getsitepackages()]
    old = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(parts + ([old] if old else []))


def bind_options(settings: Settings) -> dict[str, str]:
    """Where a local MiniCluster listens: REST/UI, RPC and the BLOB server (which binds to
    the JobManager's bind host) on ``flink_bind_host`` instead of every interface."""
    host = settings.flink_bind_host
    return {
        "rest.bind-address": host,
        "jobmanager.bind-host": host,
        "taskmanager.bind-host": host,
    }


def checkpoint_config(settings: Settings, restore_path: str | None = None) -> dict[str, str]:
    """Flink options for checkpoints, restarts and savepoints from the settings.

    Exactly-once state snapshots every ``checkpoint_interval_ms`` into
    ``checkpoints_home`` (file://, shared by the JobManager and TaskManagers of a local
    standalone cluster), retained on cancellation so a job can also be resumed from its
    last checkpoint by hand (``--from-savepoint <chk-N dir>``); fixed-delay restarts, so a
    lost TaskManager makes the job restart from the last completed checkpoint as soon as
    slots are back. ``restore_path``: start from this savepoint/checkpoint.
    """
    out: dict[str, str] = {}
    if settings.checkpoint_interval_ms > 0:
        out |= {
            "execution.checkpointing.interval": f"{settings.checkpoint_interval_ms} ms",
            "execution.checkpointing.mode": "EXACTLY_ONCE",
            "execution.checkpointing.dir": settings.checkpoints_home.as_uri(),
            "execution.checkpointing.savepoint-dir": settings.savepoints_home.as_uri(),
            "execution.checkpointing.num-retained": str(settings.checkpoints_retained),
            "execution.checkpointing.externalized-checkpoint-retention": ("RETAIN_ON_CANCELLATION"),
            "state.backend.type": "hashmap",
            "restart-strategy.type": "fixed-delay",
            "restart-strategy.fixed-delay.attempts": str(settings.restart_attempts),
            "restart-strategy.fixed-delay.delay": f"{settings.restart_delay_ms} ms",
        }
    if restore_path:
        out["execution.state-recovery.path"] = restore_path
    return out


def flink_options(
    settings: Settings,
    job_name: str,
    *,
    checkpointing: bool = True,
    restore_path: str | None = None,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """Every Flink option of a candleflow job, the one place they are made: UTC, jars,
    parallelism, the Python executable and UDF bundles, the MiniCluster binds and (with
    ``checkpointing``) :func:`checkpoint_config`; ``extra`` last (a job's own overrides)."""
    s = settings
    base = {
        "table.local-time-zone": "UTC",
        "pipeline.name": job_name,
        "pipeline.jars": pipeline_jars(s.jars_dir),
        "parallelism.default": str(s.parallelism),
        "python.executable": s.flink_python_executable or sys.executable,
        "python.client.executable": sys.executable,
        "pipeline.auto-watermark-interval": f"{s.watermark_interval_ms} ms",
        "python.execution-mode": s.python_execution_mode,
        "python.fn-execution.bundle.size": str(s.python_bundle_size),
        "python.fn-execution.bundle.time": str(s.python_bundle_time_ms),
        "python.fn-execution.arrow.batch.size": str(
            min(s.python_arrow_batch_size, s.python_bundle_size)
        ),
        **bind_options(s),
    }
    if restore_path and not checkpointing:
        raise ValueError(f"{job_name}: resuming from a savepoint needs a checkpointed job")
    if checkpointing:
        base |= checkpoint_config(s, restore_path)
    return base | (extra or {})


_LOOPBACK_POOL: str | None = None  # this process's loopback worker pool, once started


def _loopback_worker_pool() -> dict[str, str]:
    """PyFlink's loopback worker pool (the gRPC service through which a local MiniCluster
    starts the Python workers inside this process), on 127.0.0.1; returns the option that
    tells the JVM where it is.

    PyFlink starts it itself at the first ``execute`` with ``add_insecure_port('[::]:0')``,
    i.e. on every interface, with no option to change that. So the process says
    ``_python_worker_execution_mode=process`` (PyFlink's switch for "do not start one"),
    starts the same servicer on loopback and sets ``python.loopback-server.address`` as
    PyFlink would. Started once per process, like PyFlink's."""
    global _LOOPBACK_POOL
    if os.environ.setdefault("_python_worker_execution_mode", "process") != "process":
        return {}  # someone asked PyFlink for its own loopback mode
    if _LOOPBACK_POOL is None:
        import atexit
        import functools

        root = logging.getLogger()
        level = root.level
        try:  # the module sets the root logger to WARNING when imported
            import grpc
            from apache_beam.portability.api import beam_fn_api_pb2_grpc
            from apache_beam.utils import thread_pool_executor
            from pyflink.fn_execution.beam.beam_worker_pool_service import (
                BeamFnLoopbackWorkerPoolServicer,
            )
        finally:
            root.setLevel(level)
        server = grpc.server(thread_pool_executor.shared_unbounded_instance())
        port = server.add_insecure_port("127.0.0.1:0")
        beam_fn_api_pb2_grpc.add_BeamFnExternalWorkerPoolServicer_to_server(
            BeamFnLoopbackWorkerPoolServicer(), server
        )
        server.start()
        atexit.register(functools.partial(server.stop, 1))
        _LOOPBACK_POOL = f"127.0.0.1:{port}"
    return {"python.loopback-server.address": _LOOPBACK_POOL}


def prepare_process(settings: Settings) -> dict[str, str]:
    """What must be set before the JVM starts: the log dir (else logs go to
    site-packages), in thread mode the embedded Python's path, and for a local MiniCluster
    the listeners of the Python-UDF machinery on loopback (:func:`infra.jars.flink_lib_dir`
    for the JVM's Beam servers, :func:`_loopback_worker_pool` for this process's).
    Returns options the job must add to its configuration."""
    log_dir = settings.logs_dir / "flink"
    log_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("FLINK_LOG_DIR", str(log_dir))
    if settings.python_execution_mode == "thread":
        _python_path_for_thread_mode()
    if "PYFLINK_GATEWAY_PORT" in os.environ:  # under `flink run`: the cluster's workers
        return {}
    _use_flink_lib_dir(settings)
    return _loopback_worker_pool()


def _use_flink_lib_dir(settings: Settings) -> None:
    """Point PyFlink's gateway at :func:`infra.jars.flink_lib_dir`. Without FLINK_HOME,
    PyFlink overwrites FLINK_LIB_DIR with its own ``lib/`` when it starts the JVM, so
    FLINK_HOME is set too (to the wheel, where it would look anyway). A FLINK_HOME or
    FLINK_LIB_DIR that someone set to another folder is left alone."""
    import pyflink

    wheel = Path(pyflink.__file__).resolve().parent
    home, lib = os.environ.get("FLINK_HOME"), os.environ.get("FLINK_LIB_DIR")
    if (home and Path(home).resolve() != wheel) or (lib and Path(lib).resolve() != wheel / "lib"):
        return
    os.environ.setdefault("FLINK_HOME", str(wheel))
    os.environ["FLINK_LIB_DIR"] = str(flink_lib_dir(settings.jars_dir))


def table_env(settings: Settings, job_name: str, *, options: dict[str, str] | None = None):
    """A streaming TableEnvironment with ``options`` (default: :func:`flink_options`
    without checkpoints). Local MiniCluster unless run under ``flink run``."""
    if options is None:
        options = flink_options(settings, job_name, checkpointing=False)
    options = options | prepare_process(settings)
    t0 = time.monotonic()
    from pyflink.table import EnvironmentSettings, TableEnvironment

    t_env = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
    conf = t_env.get_config()
    for k, v in options.items():
        conf.set(k, v)
    log.info("TableEnvironment ready in %.1fs (JVM start)", time.monotonic() - t0)
    return t_env


TERMINAL_STATES = ("FINISHED", "FAILED", "CANCELED")
WATCH_EVERY_S = 2.0


@dataclass
class JobHandle:
    """A submitted job. ``wait`` also watches the ids of the topics the job reads
    (``watch``: topic -> id at submit): one that changes or vanishes was recreated, i.e. the
    broker lost its data (the local in-memory broker after a restart). Flink's source would
    not notice (Tansu answers a fetch beyond the end of a log with nothing, not with an
    out-of-range error), so the job is cancelled and :class:`infra.kafka.BrokerReset` raised."""

    result: Any  # pyflink TableResult
    jvm_start_s: float
    submitted_at: float
    bootstrap: str = ""
    watch: dict[str, str | None] = field(default_factory=dict)

    @property
    def job_id(self) -> str:
        client = self.result.get_job_client()
        return str(client.get_job_id()) if client else "?"

    def wait(self) -> None:
        client = self.result.get_job_client()
        watched = {t: i for t, i in self.watch.items() if i is not None}
        if client is not None and watched:
            while _job_state(client) not in TERMINAL_STATES:
                changed = self.recreated_topics(watched)
                if changed:
                    client.cancel().result()
                    raise BrokerReset(
                        f"job {self.job_id} cancelled: {'; '.join(changed)}. The broker lost "
                        "the data the job had read (the local broker keeps topics in memory; "
                        "a restart drops them); resubmit once the input is back"
                    )
                time.sleep(WATCH_EVERY_S)
        self.result.wait()

    def recreated_topics(self, watched: dict[str, str]) -> list[str]:
        from infra.kafka import topic_ids

        try:
            now = topic_ids(self.bootstrap, watched)
        except Exception as e:  # broker unreachable: not a reset (yet); look again
            log.debug("topic ids: %s", e)
            return []
        return [
            f"topic {t} "
            + ("is gone" if now.get(t) is None else f"was recreated (id {i} -> {now[t]})")
            for t, i in watched.items()
            if now.get(t) != i
        ]


def _job_state(client: Any) -> str:
    """The job's state; a local MiniCluster shuts down with its job, so no answer = ended."""
    try:
        return str(client.get_job_status().result().name)
    except Exception:  # Py4JJavaError: "MiniCluster is not yet running or has already been
        return "FINISHED"  # shut down"; result.wait() then says how it ended


def submit_sql(
    settings: Settings,
    sql_file: str,
    params: dict[str, str],
    job_name: str,
    functions: dict[str, Any] | None = None,
    *,
    checkpointing: bool = False,
    restore_path: str | None = None,
    endpoints: Endpoints | None = None,
) -> JobHandle:
    """Register ``functions``, run the DDL of ``sql_file`` and submit all its INSERTs as
    one statement set (one job). ``checkpointing``: with :func:`checkpoint_config`;
    ``restore_path``: resume from that savepoint/retained checkpoint; ``endpoints``: the
    ones ``params`` came from (a fresh start commits its sources' start offsets:
    :meth:`infra.connectors.Endpoints.start_sources`)."""
    from jobs.flink.sqlfile import is_insert, load_statements

    t0 = time.monotonic()
    options = flink_options(
        settings, job_name, checkpointing=checkpointing, restore_path=restore_path
    )
    t_env = table_env(settings, job_name, options=options)
    jvm_s = time.monotonic() - t0
    for name, fn in (functions or {}).items():
        t_env.create_temporary_function(name, fn)
    stmt_set = t_env.create_statement_set()
    for stmt in load_statements(sql_file, params):
        if is_insert(stmt):
            stmt_set.add_insert_sql(stmt)
        else:
            t_env.execute_sql(stmt)
    if endpoints is not None and not restore_path:
        start_sources(endpoints)
    watch = endpoints.source_topic_ids() if endpoints is not None else {}
    handle = JobHandle(stmt_set.execute(), jvm_s, time.monotonic(), settings.kafka_bootstrap, watch)
    log.info("submitted %s (job %s), JVM start %.1fs", job_name, handle.job_id, jvm_s)
    return handle


def start_sources(endpoints: Endpoints) -> None:
    """Commit the job's Kafka sources' start offsets (earliest) for its group and log them."""
    started = endpoints.start_sources()
    if started:
        log.info("group %s starts at %s", endpoints.settings.group_id, started)


def parse_offsets(text: str | None) -> dict[int, int] | None:
    """'0:1234,1:99' -> {0: 1234, 1: 99}."""
    if not text:
        return None
    return {int(p): int(o) for p, o in (item.split(":") for item in text.split(","))}


def job_main(
    prog: str,
    doc: str | None,
    submit: Callable[[Endpoints], JobHandle],
    argv: list[str] | None,
    settings: Settings,
) -> None:
    """Command-line entry of a job file (also what `flink run -py FILE -- ARGS` calls)."""
    import argparse

    from infra.connectors import Endpoints

    ap = argparse.ArgumentParser(prog=prog, description=doc)
    ap.add_argument("--end-offsets", help="bounded replay: stop at these offsets, e.g. 0:115993")
    ap.add_argument("--start-offsets", help="start at these offsets instead of earliest")
    ap.add_argument("--detach", action="store_true", help="submit and return")
    ap.add_argument(
        "--from-savepoint",
        help="resume from this savepoint or retained checkpoint (local MiniCluster; on a "
        "cluster use `flink run -s PATH`)",
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    endpoints = Endpoints(
        settings,
        end_offsets=parse_offsets(args.end_offsets),
        start_offsets=parse_offsets(args.start_offsets),
    )
    if args.from_savepoint:
        handle = submit(endpoints, restore_path=args.from_savepoint)  # type: ignore[call-arg]
    else:
        handle = submit(endpoints)
    if not args.detach:
        try:
            handle.wait()
        except BrokerReset as e:
            log.error("%s: %s", prog, e)
            raise SystemExit(1) from e
        log.info("%s finished", prog)
