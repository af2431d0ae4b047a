-- candleflow analytics store, migration 004: orders, fills, equity/P&L and a daily rollup.

-- an order's lifecycle (new -> partially_filled -> filled | canceled | rejected) is a
-- sequence of rows with growing updated_at_ms; FINAL gives the latest state per order
CREATE TABLE IF NOT EXISTS orders (
    client_order_id String,
    exchange_order_id String,
    strategy String,
    symbol String,
    side String,
    order_type String,
    qty Float64,
    limit_price Nullable(Float64),
    status String,
    filled_qty Float64,
    avg_fill_price Nullable(Float64),
    created_at_ms Int64,
    updated_at_ms Int64
) ENGINE = ReplacingMergeTree(updated_at_ms)
ORDER BY client_order_id;

-- fills are immutable: a re-delivered fill_id collapses to one row
CREATE TABLE IF NOT EXISTS fills (
    fill_id String,
    client_order_id String,
    strategy String,
    symbol String,
    side String,
    qty Float64,
    price Float64,
    fee Float64,
    fee_asset String,
    liquidity String,
    realized_pnl Float64,
    ts_ms Int64
) ENGINE = ReplacingMergeTree()
ORDER BY fill_id;

-- equity snapshots per strategy (mark-to-market)
CREATE TABLE IF NOT EXISTS equity (
    strategy String,
    ts_ms Int64,
    cash Float64,
    position_value Float64,
    equity Float64,
    realized_pnl Float64,
    unrealized_pnl Float64,
    fees Float64,
    ts DateTime('UTC') MATERIALIZED toDateTime(intDiv(ts_ms, 1000), 'UTC')
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(ts)
ORDER BY (strategy, ts_ms);

-- daily P&L per strategy from the equity snapshots. Only idempotent aggregates (argMin,
-- argMax, min, max), so a duplicated snapshot does not change the result.
-- Read: SELECT day, strategy, argMaxMerge(close_equity) - argMinMerge(open_equity) AS pnl ...
CREATE TABLE IF NOT EXISTS pnl_daily (
    day Date,
    strategy String,
    open_equity AggregateFunction(argMin, Float64, Int64),
    close_equity AggregateFunction(argMax, Float64, Int64),
    min_equity AggregateFunction(min, Float64),
    max_equity AggregateFunction(max, Float64),
    close_realized_pnl AggregateFunction(argMax, Float64, Int64),
    close_fees AggregateFunction(argMax, Float64, Int64),
    last_ts_ms AggregateFunction(max, Int64)
) ENGINE = AggregatingMergeTree()
ORDER BY (day, strategy);

CREATE MATERIALIZED VIEW IF NOT EXISTS pnl_daily_mv TO pnl_daily AS
SELECT
    toDate(toDateTime(intDiv(ts_ms, 1000), 'UTC')) AS day,
    strategy,
    argMinState(equity, ts_ms) AS open_equity,
    argMaxState(equity, ts_ms) AS close_equity,
    minState(equity) AS min_equity,
    maxState(equity) AS max_equity,
    argMaxState(realized_pnl, ts_ms) AS close_realized_pnl,
    argMaxState(fees, ts_ms) AS close_fees,
    maxState(ts_ms) AS last_ts_ms
FROM equity
GROUP BY day, strategy;
