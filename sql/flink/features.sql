-- candleflow features job: Kafka `candles` -> indicator features -> Kafka `features`.
--
-- One pandas UDAF (udfs/flink_udfs.py: features) over a bounded OVER window per symbol and
-- timeframe returns all features as ARRAY<DOUBLE> (NULL = warm-up not met). Each feature
-- reads only its own history window inside the frame, so stream == batch exactly.
-- ${...} placeholders come from infra/connectors.py and udfs/indicators.py.

CREATE TEMPORARY TABLE candles_src (
    symbol STRING,
    timeframe STRING,
    window_start_ms BIGINT,
    window_end_ms BIGINT,
    `open` DECIMAL(20, 8),
    high DECIMAL(20, 8),
    low DECIMAL(20, 8),
    `close` DECIMAL(20, 8),
    volume DECIMAL(38, 8),
    vwap DOUBLE,
    trade_count BIGINT,
    rowtime AS TO_TIMESTAMP_LTZ(window_end_ms - 1, 3),
    WATERMARK FOR rowtime AS rowtime - INTERVAL '${watermark_delay_s}' SECOND(3)
) WITH (${candles_source});

CREATE TEMPORARY VIEW candles_with_features AS
SELECT *,
    features(CAST(`open` AS DOUBLE), CAST(high AS DOUBLE), CAST(low AS DOUBLE),
             CAST(`close` AS DOUBLE), CAST(volume AS DOUBLE), vwap) OVER w AS f
FROM candles_src
WINDOW w AS (
    PARTITION BY symbol, timeframe
    ORDER BY rowtime
    ROWS BETWEEN ${over_preceding} PRECEDING AND CURRENT ROW);

CREATE TEMPORARY TABLE features_sink (
    feature_key STRING,
    symbol STRING,
    timeframe STRING,
    window_start_ms BIGINT,
    window_end_ms BIGINT,
    `open` DECIMAL(20, 8),
    high DECIMAL(20, 8),
    low DECIMAL(20, 8),
    `close` DECIMAL(20, 8),
    volume DECIMAL(38, 8),
    vwap DOUBLE,
    trade_count BIGINT,
    ${feature_column_types},
    features_ready BOOLEAN,
    event_time TIMESTAMP_LTZ(3),
    computed_at TIMESTAMP_LTZ(3)
) WITH (${features_sink});

INSERT INTO features_sink
SELECT
    symbol || '|' || timeframe, symbol, timeframe, window_start_ms, window_end_ms,
    `open`, high, low, `close`, volume, vwap, trade_count,
    ${feature_column_values},
    ${features_ready_expr},
    rowtime,
    CURRENT_TIMESTAMP
FROM candles_with_features;
