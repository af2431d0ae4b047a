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
from pathlib import Path

if __name__ == "__main__":  # under `flink run -py` only this file's folder is on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.connectors import Endpoints
from infra.settings import Settings, get_settings
from jobs.flink_env import JobHandle, parse_offsets, submit_sql

log = logging.getLogger("candleflow.candles")
SQL_FILE = "candles.sql"


def submit(endpoints: Endpoints, *, job_name: str = "candleflow-candles") -> JobHandle:
    return submit_sql(endpoints.settings, SQL_FILE, endpoints.candles_params(), job_name)


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
