"""Candles job: Kafka ``trades`` -> Flink SQL (sql/flink/candles.sql) -> ``candles``,
``trades_dlq`` and ``trades_late``.

Thin by design: load the SQL, fill connector options from the config layer, submit one
statement set. Run it through the CLI (``candleflow candles run``) or, on a standalone
cluster, with ``flink run -py jobs/flink/candles.py -- [--end-offsets 0:1234]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":  # under `flink run -py` only this file's folder is on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from infra.connectors import Endpoints
from infra.settings import Settings, get_settings
from jobs.flink.env import JobHandle, job_main, submit_sql

SQL_FILE = "candles.sql"


def submit(
    endpoints: Endpoints, *, job_name: str = "candleflow-candles", restore_path: str | None = None
) -> JobHandle:
    """Submit the job, checkpointed (``checkpoint_interval_ms``); ``restore_path``: resume
    from a savepoint or retained checkpoint."""
    return submit_sql(
        endpoints.settings,
        SQL_FILE,
        endpoints.candles_params(),
        job_name,
        checkpointing=True,
        restore_path=restore_path,
        endpoints=endpoints,
    )


def main(argv: list[str] | None = None, settings: Settings | None = None) -> None:
    job_main("candles", __doc__, submit, argv, settings or get_settings())


if __name__ == "__main__":
    main()
