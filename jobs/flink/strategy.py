"""Strategy job: Kafka ``features`` -> predictions (BentoML ``/score``) -> strategy + paper
broker -> Kafka ``predictions``, ``orders``, ``fills``, ``equity``.

SQL in sql/flink/strategy.sql (its header explains the design); UDF and operator in
udfs/flink_strategy.py. This file only wires them: SQL DDL -> ``predictions`` view ->
one DataStream -> (a) the predictions sink, (b) key_by(constant) -> StrategyFunction ->
orders / fills / equity tables -> the SQL INSERTs, all in one statement set attached to the
DataStream environment (one job).

Run it with ``candleflow strategy run`` or ``flink run -py jobs/flink/strategy.py -- [...]``.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __name__ == "__main__":  # under `flink run -py` only this file's folder is on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from infra.connectors import Endpoints
from infra.settings import Settings, get_settings
from jobs.flink.env import JobHandle, flink_options, job_main, prepare_process, start_sources
from udfs.contract import MAX_ITEMS

log = logging.getLogger(__name__)
SQL_FILE = "strategy.sql"
ACCOUNT_KEY = 0  # one account: every row goes to the same key (one operator instance)
# rows per Arrow batch = items per /score call: ~0.2-0.3 ms per item on the service, so a
# catch-up replay's calls stay well inside predict_timeout_s (4096 items took up to 2.7 s
# under the job's load; 1000 items ~0.26 s idle)
SCORE_BATCH_ROWS = 1000


def flink_config(
    settings: Settings, job_name: str, restore_path: str | None = None
) -> dict[str, str]:
    """The project's options (:func:`jobs.flink.env.flink_options`: checkpointed, so the
    account in ``ValueState`` survives a failure) with the Arrow batch (= one /score call)
    capped at :data:`SCORE_BATCH_ROWS`."""
    s = settings
    bundle = min(s.python_arrow_batch_size, s.python_bundle_size, SCORE_BATCH_ROWS, MAX_ITEMS)
    return flink_options(
        s,
        job_name,
        checkpointing=True,
        restore_path=restore_path,
        extra={"python.fn-execution.arrow.batch.size": str(bundle)},
    )


def stream_table_env(
    settings: Settings, job_name: str, restore_path: str | None = None
) -> tuple[Any, Any]:
    """A StreamExecutionEnvironment + StreamTableEnvironment configured the project's way."""
    local = prepare_process(settings)
    from pyflink.common import Configuration
    from pyflink.datastream import StreamExecutionEnvironment
    from pyflink.table import StreamTableEnvironment

    options = flink_config(settings, job_name, restore_path) | local
    conf = Configuration()
    for k, v in options.items():
        conf.set_string(k, v)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    t_env = StreamTableEnvironment.create(env)
    for k, v in options.items():
        t_env.get_config().set(k, v)
    return env, t_env


@dataclass
class StreamJobResult:
    """What :class:`jobs.flink.env.JobHandle` expects of a result (``wait``,
    ``get_job_client``), for a job submitted with ``env.execute_async``."""

    job_client: Any

    def get_job_client(self) -> Any:
        return self.job_client

    def wait(self) -> None:
        self.job_client.get_job_execution_result().result()


def build(
    t_env: Any, endpoints: Endpoints, from_ms: int | None = None, to_ms: int | None = None
) -> list[str]:
    """Register the UDF, run the SQL's DDL, wire the DataStream part; returns the INSERTs.
    Only bars with ``from_ms <= bar_end_ms <= to_ms`` are scored and traded."""
    from pyflink.common import Types

    from jobs.flink.sqlfile import is_insert, load_statements
    from udfs.flink_strategy import (
        EQUITY_TAG,
        FILLS_TAG,
        ORDERS_TYPE,
        StrategyFunction,
        load_strategy_config,
        predict_udf,
    )

    s = endpoints.settings
    config = load_strategy_config(s.strategy_config, s.strategy_id)
    token = s.serving_admin_token.get_secret_value() if s.serving_admin_token else None
    predict = predict_udf(
        s.predictor_url,
        s.predict_timeout_s,
        s.predict_retries,
        s.predict_circuit_open_s,
        s.predict_model_schedule,
        token,
    )
    t_env.create_temporary_function("predict", predict)
    inserts: list[str] = []
    for stmt in load_statements(SQL_FILE, endpoints.strategy_params(from_ms, to_ms)):
        if is_insert(stmt):
            inserts.append(stmt)
        else:
            t_env.execute_sql(stmt)
    predictions = t_env.to_data_stream(t_env.from_path("predictions"))
    t_env.create_temporary_view("predictions_stream", t_env.from_data_stream(predictions))
    orders = predictions.key_by(lambda _: ACCOUNT_KEY, key_type=Types.INT()).process(
        StrategyFunction(config.model_dump_json(), config.strategy_id, s.strategy_timeframe),
        output_type=ORDERS_TYPE,
    )
    orders.name("strategy").uid("strategy")
    t_env.create_temporary_view("orders_stream", t_env.from_data_stream(orders))
    t_env.create_temporary_view(
        "fills_stream", t_env.from_data_stream(orders.get_side_output(FILLS_TAG))
    )
    t_env.create_temporary_view(
        "equity_stream", t_env.from_data_stream(orders.get_side_output(EQUITY_TAG))
    )
    return inserts


def submit(
    endpoints: Endpoints,
    *,
    job_name: str = "candleflow-strategy",
    from_ms: int | None = None,
    to_ms: int | None = None,
    restore_path: str | None = None,
) -> JobHandle:
    """Submit the job (``env.execute_async``), checkpointed; bars outside ``[from_ms,
    to_ms]`` (bar end, inclusive; None = unbounded) are ignored (a backtest's range);
    ``restore_path``: resume from a savepoint or retained checkpoint."""
    t0 = time.monotonic()
    env, t_env = stream_table_env(endpoints.settings, job_name, restore_path)
    jvm_s = time.monotonic() - t0
    stmt_set = t_env.create_statement_set()
    for stmt in build(t_env, endpoints, from_ms, to_ms):
        stmt_set.add_insert_sql(stmt)
    stmt_set.attach_as_datastream()
    if not restore_path:
        start_sources(endpoints)
    watch = endpoints.source_topic_ids()
    handle = JobHandle(
        StreamJobResult(env.execute_async(job_name)),
        jvm_s,
        time.monotonic(),
        endpoints.settings.kafka_bootstrap,
        watch,
    )
    log.info("submitted %s (job %s), JVM start %.1fs", job_name, handle.job_id, jvm_s)
    return handle


def main(argv: list[str] | None = None, settings: Settings | None = None) -> None:
    s = settings or get_settings()
    s = s.model_copy(update={"group_id": s.group_id + "-strategy"})
    job_main("strategy", __doc__, submit, argv, s)


if __name__ == "__main__":
    main()
