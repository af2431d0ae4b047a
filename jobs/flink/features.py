"""Features job: Kafka ``candles`` -> indicator features (sql/flink/features.sql, one pandas
UDF over ARRAY_AGG windows of a bounded OVER window) -> Kafka ``features``.

Run it with ``candleflow features run`` or ``flink run -py jobs/flink/features.py -- [...]``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # under `flink run -py` only this file's folder is on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from infra.connectors import Endpoints
from infra.settings import Settings, get_settings
from jobs.flink.env import JobHandle, job_main, submit_sql


def kline_message(r: Any, timeframe: str = "1m", bar_ms: int = 60_000) -> dict[str, Any]:
    """One kline row (ts_ms, symbol, open, high, low, close, volume, vwap) as the candles
    job writes it to `candles`: the input the features job reads (tests, benchmarks)."""
    return {
        "symbol": r.symbol,
        "timeframe": timeframe,
        "window_start_ms": int(r.ts_ms),
        "window_end_ms": int(r.ts_ms) + bar_ms,
        "open": r.open,
        "high": r.high,
        "low": r.low,
        "close": r.close,
        "volume": r.volume,
        "vwap": r.vwap,
        "trade_count": 1,
    }


def submit(
    endpoints: Endpoints,
    *,
    job_name: str = "candleflow-features",
    restore_path: str | None = None,
) -> JobHandle:
    """Submit the job, checkpointed (``checkpoint_interval_ms``); ``restore_path``: resume
    from a savepoint or retained checkpoint."""
    from udfs.flink_udfs import features

    return submit_sql(
        endpoints.settings,
        "features.sql",
        endpoints.features_params(),
        job_name,
        functions={"features": features},
        checkpointing=True,
        restore_path=restore_path,
        endpoints=endpoints,
    )


def main(argv: list[str] | None = None, settings: Settings | None = None) -> None:
    s = settings or get_settings()
    s = s.model_copy(update={"group_id": s.group_id + "-features"})
    job_main("features", __doc__, submit, argv, s)


if __name__ == "__main__":
    main()
