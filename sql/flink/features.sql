-- candleflow features job: Kafka `candles` -> indicator features -> Kafka `features`.
--
-- A bounded OVER window per symbol and timeframe collects each row's last bars
-- (ARRAY_AGG, oldest first), and one vectorised pandas UDF (udfs/flink_udfs.py: features)
-- computes all features for a whole Arrow batch of rows at once, as ARRAY<DOUBLE> (NULL =
-- warm-up not met). Each feature reads only its own history window inside the frame, so
-- stream == batch exactly (both call udfs.indicators.compute_windows).
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

CREATE TEMPORARY VIEW candles_windows AS
SELECT *,
    ARRAY_AGG(CAST(`open` AS DOUBLE)) OVER w AS open_w,
    ARRAY_AGG(CAST(high AS DOUBLE)) OVER w AS high_w,
    ARRAY_AGG(CAST(low AS DOUBLE)) OVER w AS low_w,
    ARRAY_AGG(CAST(`close` AS DOUBLE)) OVER w AS close_w,
    ARRAY_AGG(CAST(volume AS DOUBLE)) OVER w AS volume_w,
    ARRAY_AGG(vwap) OVER w AS vwap_w
FROM candles_src
WINDOW w AS (
    PARTITION BY symbol, timeframe
    ORDER BY rowtime
    ROWS BETWEEN ${over_preceding} PRECEDING AND CURRENT ROW);

CREATE TEMPORARY VIEW candles_with_features AS
SELECT symbol, timeframe, window_start_ms, window_end_ms, `open`, high, low, `close`, volume,
    vwap, trade_count, rowtime,
    features(open_w, high_w, low_w, close_w, volume_w, vwap_w) AS f
FROM candles_windows;

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
