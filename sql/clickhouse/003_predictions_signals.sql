-- candleflow analytics store, migration 003: model predictions and strategy signals.

-- one prediction per candle and model; a re-scored candle (newer predicted_at_ms) wins
CREATE TABLE IF NOT EXISTS predictions (
    symbol String,
    timeframe String,
    window_start_ms Int64,
    model_tag String,
    model_version String,
    horizon_bars Int32,
    prob_up Float64,
    predicted_label Int8,
    features_ready UInt8,
    latency_ms Float64,
    predicted_at_ms Int64,
    window_start DateTime('UTC') MATERIALIZED toDateTime(intDiv(window_start_ms, 1000), 'UTC')
) ENGINE = ReplacingMergeTree(predicted_at_ms)
PARTITION BY toYYYYMM(window_start)
ORDER BY (symbol, timeframe, window_start_ms, model_tag);

-- one signal per strategy and candle (action: buy | sell | hold)
CREATE TABLE IF NOT EXISTS signals (
    strategy String,
    symbol String,
    timeframe String,
    window_start_ms Int64,
    model_tag String,
    action String,
    strength Float64,
    target_position Float64,
    reason String,
    emitted_at_ms Int64,
    window_start DateTime('UTC') MATERIALIZED toDateTime(intDiv(window_start_ms, 1000), 'UTC')
) ENGINE = ReplacingMergeTree(emitted_at_ms)
PARTITION BY toYYYYMM(window_start)
ORDER BY (strategy, symbol, timeframe, window_start_ms);
