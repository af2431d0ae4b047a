-- candleflow analytics store, migration 002: the `features` topic and its freshness rollup.
--
-- `features` holds exactly what the Flink features job (sql/flink/features.sql) writes to
-- the `features` topic, in the same column order: ${feature_columns} is rendered from
-- udfs.indicators.FEATURE_NAMES (Nullable: NULL = the feature is not warm yet).
-- event_time and computed_at are epoch ms (the topic carries them as ISO-8601 strings;
-- infra.clickhouse.features_row converts). The newest computed_at wins under FINAL.

CREATE TABLE IF NOT EXISTS features (
    feature_key String,
    symbol String,
    timeframe String,
    window_start_ms Int64,
    window_end_ms Int64,
    open Float64,
    high Float64,
    low Float64,
    close Float64,
    volume Float64,
    vwap Float64,
    trade_count Int64,
${feature_columns},
    features_ready UInt8,
    event_time Int64,
    computed_at Int64,
    window_start DateTime('UTC') MATERIALIZED toDateTime(intDiv(window_start_ms, 1000), 'UTC')
) ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(window_start)
ORDER BY (symbol, timeframe, window_start_ms);

-- freshness per symbol/timeframe, filled on every insert into `features`. max() is
-- idempotent, so duplicate deliveries do not change it; rows_written counts deliveries.
-- Read: SELECT symbol, timeframe, maxMerge(last_window_end_ms), ... GROUP BY symbol, timeframe
CREATE TABLE IF NOT EXISTS feature_freshness (
    symbol String,
    timeframe String,
    last_window_end_ms AggregateFunction(max, Int64),
    last_computed_at AggregateFunction(max, Int64),
    last_ready_window_end_ms AggregateFunction(max, Int64),
    max_lag_ms AggregateFunction(max, Int64),
    rows_written AggregateFunction(count)
) ENGINE = AggregatingMergeTree()
ORDER BY (symbol, timeframe);

CREATE MATERIALIZED VIEW IF NOT EXISTS feature_freshness_mv TO feature_freshness AS
SELECT
    symbol,
    timeframe,
    maxState(window_end_ms) AS last_window_end_ms,
    maxState(computed_at) AS last_computed_at,
    maxState(if(features_ready = 1, window_end_ms, toInt64(0))) AS last_ready_window_end_ms,
    maxState(computed_at - window_end_ms) AS max_lag_ms,
    countState() AS rows_written
FROM features
GROUP BY symbol, timeframe;
