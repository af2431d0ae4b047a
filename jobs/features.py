"""Features job: Kafka ``candles`` -> indicator features (sql/flink/features.sql, one pandas
UDAF over a bounded OVER window) -> Kafka ``features``.

Run it with ``candleflow features run`` or ``flink run -py jobs/features.py -- [...]``.
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

log = logging.getLogger("candleflow.features")


def submit(endpoints: Endpoints, *, job_name: str = "candleflow-features") -> JobHandle:
    from udfs.flink_udfs import features

    return submit_sql(
        endpoints.settings,
        "features.sql",
        endpoints.features_params(),
        job_name,
        functions={"features": features},
    )


def main(argv: list[str] | None = None, settings: Settings | None = None) -> None:
    ap = argparse.ArgumentParser(prog="features", description=__doc__)
    ap.add_argument("--end-offsets", help="bounded replay: stop at these candles offsets")
    ap.add_argument("--start-offsets", help="start at these offsets instead of earliest")
    ap.add_argument("--detach", action="store_true", help="submit and return")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    s = settings or get_settings()
    endpoints = Endpoints(
        s.model_copy(update={"group_id": s.group_id + "-features"}),
        end_offsets=parse_offsets(args.end_offsets),
        start_offsets=parse_offsets(args.start_offsets),
    )
    handle = submit(endpoints)
    if not args.detach:
        handle.wait()
        log.info("job finished")


if __name__ == "__main__":
    main()
