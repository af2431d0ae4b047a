"""The topic models (udfs/topics.py) are the one declaration of each message: the writers
check exactly them, the paper broker's frames and the prediction UDF's result come from
them, and the Flink sinks (the one place SQL must declare the columns again) hold the same
fields in the same order. The ClickHouse tables are checked against the writers' columns,
so against the models, in tests/unit/jobs/writers/test_writer_columns.py."""

from __future__ import annotations

import re

import pytest

from infra.connectors import Endpoints
from infra.settings import Settings
from jobs.flink.sqlfile import load_statements
from jobs.writers import candles, features, trading
from jobs.writers.columns import topic_columns
from udfs import flink_strategy, predict_client, strategy
from udfs.topics import STRATEGY_KEYS, TOPICS, pandas_dtypes

# the Kafka message key each sink adds in front of the topic's fields (not stored)
SINK_KEYS = {"candles": "candle_key", "predictions": "prediction_key"}
SINKS = {
    "candles": ("candles.sql", "candles_sink"),
    "features": ("features.sql", "features_sink"),
    "predictions": ("strategy.sql", "predictions_sink"),
    "orders": ("strategy.sql", "orders_sink"),
    "fills": ("strategy.sql", "fills_sink"),
    "equity": ("strategy.sql", "equity_sink"),
}


def test_the_writers_check_the_models() -> None:
    assert topic_columns("candles") == candles.COLUMNS
    assert topic_columns("features") == features.COLUMNS
    assert {k: dict(v) for k, v in trading.FIELDS.items()} == {
        k: topic_columns(k) for k in ("predictions", "orders", "fills", "equity")
    }


def test_the_strategy_frames_and_the_prediction_result_are_the_models() -> None:
    for topic, cols in (
        ("orders", strategy.ORDER_COLUMNS),
        ("fills", strategy.FILL_COLUMNS),
        ("equity", strategy.EQUITY_COLUMNS),
    ):
        assert list(cols.items()) == list(pandas_dtypes(topic, without=STRATEGY_KEYS).items())
        # the job's output rows: the frame's columns + the keys = every field of the topic
        assert set(flink_strategy.output_columns(topic)) == set(TOPICS[topic])
    keys = predict_client.KEY_COLUMNS
    assert [*keys, *predict_client.PREDICTION_COLUMNS] == list(TOPICS["predictions"])


def _rendered(sql_file: str) -> list[str]:
    e = Endpoints(Settings())
    params = {
        "candles.sql": e.candles_params,
        "features.sql": e.features_params,
        "strategy.sql": e.strategy_params,
    }[sql_file]()
    return load_statements(sql_file, params)


def sink_columns(sql_file: str, table: str) -> list[str]:
    (ddl,) = [s for s in _rendered(sql_file) if f"CREATE TEMPORARY TABLE {table} (" in s]
    body = ddl.split("(", 1)[1].rsplit(") WITH", 1)[0]
    names = []
    for ln in body.splitlines():
        m = re.match(r"\s*`?(\w+)`?\s+[A-Z]", ln)
        if m and not ln.strip().upper().startswith(("WATERMARK", "PRIMARY")):
            names.append(m.group(1))
    return names


@pytest.mark.parametrize("topic", sorted(SINKS))
def test_each_flink_sink_holds_its_topic_fields_in_order(topic: str) -> None:
    cols = sink_columns(*SINKS[topic])
    if topic in SINK_KEYS:
        assert cols[0] == SINK_KEYS[topic]
        cols = cols[1:]
    if topic in ("orders", "fills", "equity"):  # the frame's columns, then the job's keys
        assert cols == [*pandas_dtypes(topic, without=STRATEGY_KEYS), *STRATEGY_KEYS]
    else:
        assert cols == list(TOPICS[topic])
