-- candleflow analytics store, migration 006: per-stage pipeline freshness.
--
-- One row per (stage, bar) observation, written by the process that observed the stage's
-- output: the candles writer (`candle`: the candle's emitted_at), the feature writer
-- (`feature_redis`: when the row was pushed to the Feast online store), the trading writer
-- (`prediction`: predicted_at_ms; `order`: when the order reached the writer).
-- lag_ms = observed_at_ms - (window_end_ms + watermark_delay_ms): the time after the
-- earliest moment the watermark could close the bar. A measurement log (plain MergeTree):
-- a re-delivered message is a second observation; read min(lag_ms) per key for "first seen".
--
-- Same dialect rules as 001: Int64 epoch ms, String (no LowCardinality), IF NOT EXISTS.
CREATE TABLE IF NOT EXISTS pipeline_freshness (
    stage String,
    symbol String,
    timeframe String,
    window_end_ms Int64,
    observed_at_ms Int64,
    lag_ms Int64,
    watermark_delay_ms Int64,
    observed_by String,
    observed DateTime('UTC') MATERIALIZED toDateTime(intDiv(observed_at_ms, 1000), 'UTC')
) ENGINE = MergeTree
PARTITION BY toYYYYMM(observed)
ORDER BY (stage, symbol, timeframe, window_end_ms);
