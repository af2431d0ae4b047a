-- candleflow analytics store, migration 005: the strategy job's four topics (`predictions`,
-- `orders`, `fills`, `equity`; layouts in sql/flink/strategy.sql, meaning in
-- udfs/strategy_rules.md), written by `candleflow trading write` (jobs/writers/trading.py).
--
-- New tables instead of new columns on 003/004's: ClickHouse 18.16 has no
-- `ADD COLUMN IF NOT EXISTS` (a syntax error there), so an ALTER would not be re-runnable,
-- and neither the sorting keys nor the version columns those tables need can be changed by
-- an ALTER on 18.16 (no MODIFY ORDER BY). 003/004's tables are unused by any writer.
--
-- Every table's non-materialized columns are exactly the fields of its topic, in the same
-- order, so `SELECT * ... FINAL` equals the messages (the topic's key field, e.g.
-- `prediction_key`, is not stored; a null model_tag is stored as ''). Versions are derived
-- from the rows themselves, never from wall-clock time, so replaying a message writes the
-- identical row and FINAL does not change.
--
-- Same dialect rules as 001: Int64 epoch ms, Float64, UInt8 for booleans, String (no
-- LowCardinality), one statement per `;`-terminated line group, all IF NOT EXISTS.

-- one prediction per bar and model; a re-scored bar (newer predicted_at_ms) wins
CREATE TABLE IF NOT EXISTS trading_predictions (
    symbol String,
    timeframe String,
    bar_end_ms Int64,
    model_tag String,
    p_down Nullable(Float64),
    p_flat Nullable(Float64),
    p_up Nullable(Float64),
    signal Nullable(Float64),
    status String,
    reason Nullable(String),
    latency_ms Nullable(Float64),
    predicted_at_ms Int64,
    bar_end DateTime('UTC') MATERIALIZED toDateTime(intDiv(bar_end_ms - 1, 1000), 'UTC')
) ENGINE = ReplacingMergeTree(predicted_at_ms)
PARTITION BY toYYYYMM(bar_end)
ORDER BY (symbol, timeframe, bar_end_ms, model_tag);

-- one row per order: the strategy emits it with status `new` and re-emits it with status
-- `rejected` (same bar_end_ms, the decision bar) when the paper broker rejects it. The
-- version ranks (bar_end_ms, rejected after new), so the rejection wins under FINAL in any
-- arrival order. Not partitioned: FINAL collapses rows only within a partition.
CREATE TABLE IF NOT EXISTS trading_orders (
    strategy String,
    timeframe String,
    client_order_id String,
    symbol String,
    bar_end_ms Int64,
    side String,
    qty Float64,
    decision_price Float64,
    reason String,
    signal Nullable(Float64),
    status String,
    version Int64 MATERIALIZED toInt64(bar_end_ms * 2 + if(status = 'rejected', 1, 0))
) ENGINE = ReplacingMergeTree(version)
ORDER BY (strategy, client_order_id);

-- one fill per order (the fill's id is its client_order_id); fills are immutable
CREATE TABLE IF NOT EXISTS trading_fills (
    strategy String,
    timeframe String,
    client_order_id String,
    symbol String,
    bar_end_ms Int64,
    side String,
    qty Float64,
    price Float64,
    fee Float64,
    position_after Float64,
    avg_entry_after Float64,
    realized_pnl Float64,
    cash_after Float64
) ENGINE = ReplacingMergeTree(bar_end_ms)
ORDER BY (strategy, client_order_id);

-- one account snapshot per strategy and bar (ts = bar_end_ms); killed is 0/1
CREATE TABLE IF NOT EXISTS trading_equity (
    strategy String,
    timeframe String,
    bar_end_ms Int64,
    cash Float64,
    equity Float64,
    gross Float64,
    realized_pnl Float64,
    fees_paid Float64,
    killed UInt8,
    degraded UInt32,
    bar_end DateTime('UTC') MATERIALIZED toDateTime(intDiv(bar_end_ms - 1, 1000), 'UTC')
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(bar_end)
ORDER BY (strategy, bar_end_ms);

-- 004's daily P&L rollup, fed from the strategy's snapshots too. A bar belongs to the UTC
-- day of bar_end_ms - 1 (strategy_rules.md, step 3: the bar ending at 00:00 closes the
-- previous day). Idempotent aggregates only, so re-delivered snapshots change nothing.
CREATE MATERIALIZED VIEW IF NOT EXISTS trading_pnl_daily_mv TO pnl_daily AS
SELECT
    toDate(toDateTime(intDiv(bar_end_ms - 1, 1000), 'UTC')) AS day,
    strategy,
    argMinState(equity, bar_end_ms) AS open_equity,
    argMaxState(equity, bar_end_ms) AS close_equity,
    minState(equity) AS min_equity,
    maxState(equity) AS max_equity,
    argMaxState(realized_pnl, bar_end_ms) AS close_realized_pnl,
    argMaxState(fees_paid, bar_end_ms) AS close_fees,
    maxState(bar_end_ms) AS last_ts_ms
FROM trading_equity
GROUP BY day, strategy;
