"""Candles job: Kafka ``trades`` -> Flink SQL (sql/flink/candles.sql) -> ``candles``,
``trades_dlq`` and ``trades_late``.

Thin by design: load the SQL, fill connector options from the config layer, submit one
statement set. Run it through the CLI (``candleflow candles run``) or, on a standalone
cluster, with ``flink run -py jobs/candles.py -- [--end-offsets 0:1234]``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

if __name__ == "__main__":  # under `flink run -py` only this file's folder is on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.connectors import Endpoints
from infra.settings import Settings, get_settings
from jobs.flink_env import table_env
from jobs.sqlfile import is_insert, load_statements

log = logging.getLogger("candleflow.candles")
SQL_FILE = "candles.sql"


@dataclass
class JobHandle:
    result: object  # pyflink TableResult
    jvm_start_s: float
    submitted_at: float

    @property
    def job_id(self) -> str:
        client = self.result.get_job_client()  # type: ignore[attr-defined]
        return str(client.get_job_id()) if client else "?"

    def wait(self) -> None:
        self.result.wait()  # type: ignore[attr-defined]


def submit(endpoints: Endpoints, *, job_name: str = "candleflow-candles") -> JobHandle:
    settings = endpoints.settings
    t0 = time.monotonic()
    t_env = table_env(settings, job_name)
    jvm_s = time.monotonic() - t0
    statements = load_statements(SQL_FILE, endpoints.candles_params())
    stmt_set = t_env.create_statement_set()
    for stmt in statements:
        if is_insert(stmt):
            stmt_set.add_insert_sql(stmt)
        else:
            t_env.execute_sql(stmt)
    result = stmt_set.execute()
    handle = JobHandle(result, jvm_s, time.monotonic())
    log.info("submitted %s (job %s), JVM start %.1fs", job_name, handle.job_id, jvm_s)
    return handle


def parse_offsets(text: str | None) -> dict[int, int] | None:
    """'0:1234,1:99' -> {0: 1234, 1: 99}."""
    if not text:
        return None
    return {int(p): int(o) for p, o in (item.split(":") for item in text.split(","))}


def main(argv: list[str] | None = None, settings: Settings | None = None) -> None:
    ap = argparse.ArgumentParser(prog="candles", description=__doc__)
    ap.add_argument("--end-offsets", help="bounded replay: stop at these offsets, e.g. 0:115993")
    ap.add_argument("--start-offsets", help="start at these offsets instead of earliest")
    ap.add_argument("--detach", action="store_true", help="submit and return")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    endpoints = Endpoints(
        settings or get_settings(),
        end_offsets=parse_offsets(args.end_offsets),
        start_offsets=parse_offsets(args.start_offsets),
    )
    handle = submit(endpoints)
    if not args.detach:
        handle.wait()
        log.info("job finished")


if __name__ == "__main__":
    main()
