-- candleflow analytics store, migration 007: pnl_daily in readable form.
--
-- pnl_daily (004) is an AggregatingMergeTree of aggregate-function states, so
-- `SELECT * FROM pnl_daily` prints their raw bytes. This view merges the states: one row per
-- (day, strategy) with plain numbers. Columns: the day's first and last equity (by bar
-- time), its P&L (last - first), lowest and highest equity, realized P&L and fees paid so far
-- at the day's last bar, and that bar's end (epoch ms).
CREATE VIEW IF NOT EXISTS pnl_daily_view AS
SELECT
    day,
    strategy,
    argMinMerge(open_equity) AS open_equity,
    argMaxMerge(close_equity) AS close_equity,
    close_equity - open_equity AS pnl,
    minMerge(min_equity) AS min_equity,
    maxMerge(max_equity) AS max_equity,
    argMaxMerge(close_realized_pnl) AS realized_pnl,
    argMaxMerge(close_fees) AS fees_paid,
    maxMerge(last_ts_ms) AS last_bar_end_ms
FROM pnl_daily
GROUP BY day, strategy;
