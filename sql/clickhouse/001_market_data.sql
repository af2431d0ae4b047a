-- candleflow analytics store, migration 001: raw trades (optional) and OHLCV candles.
--
-- Runs unchanged on ClickHouse 18.16 (Debian's clickhouse-server) and chDB 26.9, so it uses
-- only what both have: epoch-ms Int64 timestamps (no DateTime64), Float64 prices (the topics'
-- JSON numbers parse to Python floats; equality is exact), UInt8 flags (no Bool), String
-- (LowCardinality is experimental on 18.16). DateTime columns are MATERIALIZED from the ms
-- columns: handy for partitions and dashboards, and absent from SELECT * so a FINAL read
-- equals the topic row exactly. ReplacingMergeTree(version) collapses duplicate keys (an
-- at-least-once sink may write a row twice); read with FINAL for one row per key.

CREATE TABLE IF NOT EXISTS trades (
    exchange String,
    symbol String,
    trade_id Int64,
    ts_ms Int64,
    price Float64,
    qty Float64,
    side String,
    ingested_at_ms Int64,
    ts DateTime('UTC') MATERIALIZED toDateTime(intDiv(ts_ms, 1000), 'UTC')
) ENGINE = ReplacingMergeTree(ingested_at_ms)
PARTITION BY toYYYYMM(ts)
ORDER BY (exchange, symbol, trade_id);

-- one row per candle, exactly the fields of the `candles` topic (emitted_at as epoch ms)
CREATE TABLE IF NOT EXISTS candles (
    symbol String,
    timeframe String,
    window_start_ms Int64,
    window_end_ms Int64,
    open Float64,
    high Float64,
    low Float64,
    close Float64,
    volume Float64,
    quote_volume Float64,
    vwap Float64,
    trade_count Int64,
    buy_volume Float64,
    sell_volume Float64,
    first_trade_id Int64,
    last_trade_id Int64,
    emitted_at Int64,
    window_start DateTime('UTC') MATERIALIZED toDateTime(intDiv(window_start_ms, 1000), 'UTC')
) ENGINE = ReplacingMergeTree(emitted_at)
PARTITION BY toYYYYMM(window_start)
ORDER BY (symbol, timeframe, window_start_ms);
