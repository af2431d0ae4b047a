-- candleflow strategy job: Kafka `features` -> predictions (BentoML /score) -> strategy +
-- paper broker -> Kafka `predictions`, `orders`, `fills`, `equity`.
--
-- Design (PyFlink 2.0; see jobs/flink/strategy.py for the wiring):
-- 1. features_src reads the features topic (the layout features.sql writes); rowtime is the
--    bar's last millisecond and the watermark has no delay: the features job emits a bar's
--    rows in bar order per symbol, so a bar is complete once a later bar has been read.
-- 2. scored calls the vectorized `predict` UDF (udfs/flink_strategy.py) once per row: one
--    Arrow batch = one POST /score; it returns a ROW (model_tag, p_down, p_flat, p_up,
--    signal, status ok|refused|degraded, reason, latency_ms, predicted_at_ms). `predictions`
--    flattens it. Only ready rows of the strategy's timeframe whose bar ends in
--    [from_ms, to_ms] (a backtest's range; unbounded by default) are scored.
-- 3. The job turns `predictions` into ONE DataStream (t_env.to_data_stream). From it:
--    - `predictions_stream` (from_data_stream) feeds the predictions sink below. Reading
--      the `predictions` view a second time in SQL would plan the UDF twice (measured: every
--      row scored by two HTTP calls, whose answers may differ);
--    - key_by(constant) -> StrategyFunction (a KeyedProcessFunction: MapState buffer per
--      bar, event-time timer at the bar end, StrategyEngine.step per bar group, engine
--      state in ValueState). General Python UDAFs cannot run in OVER windows and the
--      account state spans all symbols, hence the DataStream operator.
--    Its outputs come back as tables `orders_stream`, `fills_stream`, `equity_stream`.
-- 4. The INSERTs below read those registered tables; all INSERTs go into one statement set
--    attached to the DataStream environment: one job.
-- ${...} placeholders come from infra/connectors.py (Endpoints.strategy_params).

CREATE TEMPORARY TABLE features_src (
    symbol STRING,
    timeframe STRING,
    window_start_ms BIGINT,
    window_end_ms BIGINT,
    `open` DOUBLE,
    high DOUBLE,
    low DOUBLE,
    `close` DOUBLE,
    volume DOUBLE,
    vwap DOUBLE,
    trade_count BIGINT,
    ${feature_column_types},
    features_ready BOOLEAN,
    rowtime AS TO_TIMESTAMP_LTZ(window_end_ms - 1, 3),
    WATERMARK FOR rowtime AS rowtime
) WITH (${features_source});

CREATE TEMPORARY VIEW scored AS
SELECT
    symbol, timeframe, window_end_ms AS bar_end_ms, `open`, high, low, `close`, rowtime,
    predict(symbol, timeframe, window_end_ms, ${predict_feature_args}) AS p
FROM features_src
WHERE timeframe = '${strategy_timeframe}' AND features_ready
    AND window_end_ms BETWEEN ${from_ms} AND ${to_ms};

CREATE TEMPORARY VIEW predictions AS
SELECT
    symbol, timeframe, bar_end_ms, `open`, high, low, `close`,
    p.model_tag AS model_tag, p.p_down AS p_down, p.p_flat AS p_flat, p.p_up AS p_up,
    p.`signal` AS `signal`, p.status AS status, p.reason AS reason,
    p.latency_ms AS latency_ms, p.predicted_at_ms AS predicted_at_ms,
    rowtime
FROM scored;

CREATE TEMPORARY TABLE predictions_sink (
    prediction_key STRING,
    symbol STRING,
    timeframe STRING,
    bar_end_ms BIGINT,
    model_tag STRING,
    p_down DOUBLE,
    p_flat DOUBLE,
    p_up DOUBLE,
    `signal` DOUBLE,
    status STRING,
    reason STRING,
    latency_ms DOUBLE,
    predicted_at_ms BIGINT
) WITH (${predictions_sink});

CREATE TEMPORARY TABLE orders_sink (
    ${order_columns}
) WITH (${orders_sink});

CREATE TEMPORARY TABLE fills_sink (
    ${fill_columns}
) WITH (${fills_sink});

CREATE TEMPORARY TABLE equity_sink (
    ${equity_columns}
) WITH (${equity_sink});

INSERT INTO predictions_sink
SELECT
    symbol || '|' || timeframe, symbol, timeframe, bar_end_ms, model_tag,
    p_down, p_flat, p_up, `signal`, status, reason, latency_ms, predicted_at_ms
FROM predictions_stream;

INSERT INTO orders_sink SELECT * FROM orders_stream;

INSERT INTO fills_sink SELECT * FROM fills_stream;

INSERT INTO equity_sink SELECT * FROM equity_stream;
