-- candleflow candles job: trades -> validated trades -> 1m OHLCV -> 5m/15m/1h rollups.
--
-- ${...} placeholders are filled by jobs/flink/sqlfile.py from the one connector-config layer
-- (infra/connectors.py), so the same statements run on a local broker, a cluster or files.
-- Statements are separated by a semicolon at the end of a line; INSERTs run together as
-- one statement set (one job, one source read).

-- The trade contract (udfs/trade_contract.py) is one rule table, shared with ingestion.
-- ${trade_check} is TRADE_CHECK(payload, '<that table as JSON>')
-- (udfs/java/candleflow/TradeCheck.java): one parse of the payload and one pass over the
-- rules give each field's JSON_VALUE text, then the first failing rule's reason (NULL for a
-- valid trade). It keeps its last result, so the several places below that read one
-- record's check cost one evaluation. (JSON_VALUE parses the payload on every call, ~4 us
-- each, and a CASE of ~25 rules was evaluated once per branch of the job.)
CREATE TEMPORARY FUNCTION TRADE_CHECK AS 'candleflow.TradeCheck' LANGUAGE JAVA;

-- Raw source: one STRING per record, so malformed JSON can never fail the job.
CREATE TEMPORARY TABLE trades_raw (
    payload STRING,
    ${source_metadata_columns},
    trade_check AS ${trade_check},
    -- event time comes from valid trades only: a record any rule rejects (bad price, a
    -- clock in the future, ...) gets epoch 0, which never advances the watermark. A computed
    -- column cannot use another, so this one calls TRADE_CHECK again (answered from its
    -- last result).
    ts AS TO_TIMESTAMP_LTZ(
        CASE
            WHEN (${trade_reason_at_source}) IS NULL THEN TRY_CAST(${ts_ms_at_source} AS BIGINT)
            ELSE 0
        END, 3),
    WATERMARK FOR ts AS ts - INTERVAL '${watermark_delay_s}' SECOND(3)
) WITH (${trades_source});

-- Parse and check. Prices and quantities travel as decimal strings (Binance style) and are
-- cast to DECIMAL so sums, VWAP inputs and open/close are exact whatever the arrival order.
-- DECIMAL(20,8) x DECIMAL(18,8) = DECIMAL(38,16): the product stays exact (wider inputs
-- would make Flink cut the product's scale to 6). The rules reject values these types
-- cannot hold exactly (more than 8 decimals, price >= 1e12, qty >= 1e10), never round them.
CREATE TEMPORARY VIEW trades_checked AS
SELECT
    payload, src_partition, src_offset, ts,
    TRY_CAST(${field_ts_ms} AS BIGINT) AS ts_ms,
    ${field_symbol} AS symbol,
    TRY_CAST(${field_price} AS DECIMAL(20, 8)) AS price,
    TRY_CAST(${field_qty} AS DECIMAL(18, 8)) AS qty,
    ${field_side} AS side,
    TRY_CAST(${field_trade_id} AS BIGINT) AS trade_id,
    COALESCE(${field_exchange}, 'unknown') AS exchange,
    ${trade_reason} AS reason
FROM trades_raw;

-- A valid trade is late when the 1m window it belongs to has already been closed by the
-- watermark seen here. Downstream window operators never see a smaller-than-here
-- watermark for a row, so rows that pass this filter are never dropped by the window:
-- every valid trade ends up in exactly one of (candles, trades_late).
CREATE TEMPORARY VIEW trades_valid AS
SELECT *,
    ts_ms - MOD(ts_ms, 60000) + 59999 AS window_max_ms,
    CURRENT_WATERMARK(ts) AS wm
FROM trades_checked
WHERE reason IS NULL;

CREATE TEMPORARY VIEW trades_on_time AS
SELECT ts, ts_ms, symbol, price, qty, side, trade_id, exchange,
    -- fixed-width key: MIN/MAX give the first/last trade by (ts_ms, trade_id), not arrival
    LPAD(CAST(ts_ms AS STRING), 15, '0') || LPAD(CAST(trade_id AS STRING), 20, '0')
        || CAST(price AS STRING) AS order_key
FROM trades_valid
WHERE wm IS NULL OR TO_TIMESTAMP_LTZ(window_max_ms, 3) > wm;

-- Producers are at-least-once (a reconnect, a replay re-run), so a trade can arrive twice.
-- Window deduplication keeps the first arrival of each (exchange, symbol, trade_id) per 1m
-- window. Its state lives as long as the window: it is freed when the watermark passes
-- the window's end, so it is bounded by the trades of the open windows. A repeat that comes
-- after its window has fired is late and goes to trades_late, so it is never counted either.
CREATE TEMPORARY VIEW trades_windowed AS
SELECT * FROM TABLE(TUMBLE(TABLE trades_on_time, DESCRIPTOR(ts), INTERVAL '1' MINUTE));

CREATE TEMPORARY VIEW trades_unique AS
SELECT * FROM (
    SELECT *, ROW_NUMBER() OVER (
        PARTITION BY window_start, window_end, exchange, symbol, trade_id ORDER BY ts ASC
    ) AS arrival
    FROM trades_windowed
) WHERE arrival = 1;

CREATE TEMPORARY VIEW candles_1m AS
SELECT
    symbol, window_time AS rowtime,
    MIN(order_key) AS open_key,
    MAX(order_key) AS close_key,
    MAX(price) AS high,
    MIN(price) AS low,
    SUM(qty) AS volume,
    SUM(price * qty) AS quote_volume,
    COUNT(*) AS trade_count,
    SUM(CASE WHEN side = 'buy' THEN qty ELSE CAST(0 AS DECIMAL(18, 8)) END) AS buy_volume,
    SUM(CASE WHEN side = 'sell' THEN qty ELSE CAST(0 AS DECIMAL(18, 8)) END) AS sell_volume,
    MIN(ts_ms) - MOD(MIN(ts_ms), 60000) AS window_start_ms
FROM trades_unique
GROUP BY symbol, window_start, window_end, window_time;

-- Rollups are cascaded window aggregations over the 1m candles (event time = window_time).
CREATE TEMPORARY VIEW candles_5m AS
SELECT symbol, window_time AS rowtime,
    MIN(open_key) AS open_key, MAX(close_key) AS close_key, MAX(high) AS high, MIN(low) AS low,
    SUM(volume) AS volume, SUM(quote_volume) AS quote_volume, SUM(trade_count) AS trade_count,
    SUM(buy_volume) AS buy_volume, SUM(sell_volume) AS sell_volume,
    MIN(window_start_ms) - MOD(MIN(window_start_ms), 300000) AS window_start_ms
FROM TABLE(TUMBLE(TABLE candles_1m, DESCRIPTOR(rowtime), INTERVAL '5' MINUTE))
GROUP BY symbol, window_start, window_end, window_time;

CREATE TEMPORARY VIEW candles_15m AS
SELECT symbol, window_time AS rowtime,
    MIN(open_key) AS open_key, MAX(close_key) AS close_key, MAX(high) AS high, MIN(low) AS low,
    SUM(volume) AS volume, SUM(quote_volume) AS quote_volume, SUM(trade_count) AS trade_count,
    SUM(buy_volume) AS buy_volume, SUM(sell_volume) AS sell_volume,
    MIN(window_start_ms) - MOD(MIN(window_start_ms), 900000) AS window_start_ms
FROM TABLE(TUMBLE(TABLE candles_1m, DESCRIPTOR(rowtime), INTERVAL '15' MINUTE))
GROUP BY symbol, window_start, window_end, window_time;

CREATE TEMPORARY VIEW candles_1h AS
SELECT symbol, window_time AS rowtime,
    MIN(open_key) AS open_key, MAX(close_key) AS close_key, MAX(high) AS high, MIN(low) AS low,
    SUM(volume) AS volume, SUM(quote_volume) AS quote_volume, SUM(trade_count) AS trade_count,
    SUM(buy_volume) AS buy_volume, SUM(sell_volume) AS sell_volume,
    MIN(window_start_ms) - MOD(MIN(window_start_ms), 3600000) AS window_start_ms
FROM TABLE(TUMBLE(TABLE candles_1m, DESCRIPTOR(rowtime), INTERVAL '1' HOUR))
GROUP BY symbol, window_start, window_end, window_time;

CREATE TEMPORARY VIEW candles_all AS
SELECT '1m' AS timeframe, 60000 AS tf_ms, * FROM candles_1m
UNION ALL SELECT '5m', 300000, * FROM candles_5m
UNION ALL SELECT '15m', 900000, * FROM candles_15m
UNION ALL SELECT '1h', 3600000, * FROM candles_1h;

CREATE TEMPORARY TABLE candles_sink (
    candle_key STRING,
    symbol STRING,
    timeframe STRING,
    window_start_ms BIGINT,
    window_end_ms BIGINT,
    `open` DECIMAL(20, 8),
    high DECIMAL(20, 8),
    low DECIMAL(20, 8),
    `close` DECIMAL(20, 8),
    volume DECIMAL(38, 8),
    quote_volume DECIMAL(38, 16),
    vwap DOUBLE,
    trade_count BIGINT,
    buy_volume DECIMAL(38, 8),
    sell_volume DECIMAL(38, 8),
    first_trade_id BIGINT,
    last_trade_id BIGINT,
    emitted_at TIMESTAMP_LTZ(3)
) WITH (${candles_sink});

CREATE TEMPORARY TABLE trades_dlq_sink (
    reason STRING,
    payload STRING,
    source_topic STRING,
    source_partition INT,
    source_offset BIGINT,
    detected_by STRING,
    detected_at TIMESTAMP_LTZ(3)
) WITH (${dlq_sink});

CREATE TEMPORARY TABLE trades_late_sink (
    symbol STRING,
    ts_ms BIGINT,
    trade_id BIGINT,
    price DECIMAL(20, 8),
    qty DECIMAL(18, 8),
    side STRING,
    exchange STRING,
    watermark_at_arrival TIMESTAMP_LTZ(3),
    payload STRING,
    source_partition INT,
    source_offset BIGINT
) WITH (${late_sink});

INSERT INTO candles_sink
SELECT
    symbol || '|' || timeframe,
    symbol, timeframe, window_start_ms, window_start_ms + tf_ms,
    CAST(SUBSTRING(open_key FROM 36) AS DECIMAL(20, 8)),
    high, low,
    CAST(SUBSTRING(close_key FROM 36) AS DECIMAL(20, 8)),
    volume, quote_volume,
    CAST(quote_volume AS DOUBLE) / CAST(volume AS DOUBLE),
    trade_count, buy_volume, sell_volume,
    CAST(SUBSTRING(open_key FROM 16 FOR 20) AS BIGINT),
    CAST(SUBSTRING(close_key FROM 16 FOR 20) AS BIGINT),
    CURRENT_TIMESTAMP
FROM candles_all;

INSERT INTO trades_dlq_sink
SELECT reason, payload, '${trades_topic}', src_partition, src_offset, 'candles-job', CURRENT_TIMESTAMP
FROM trades_checked
WHERE reason IS NOT NULL;

INSERT INTO trades_late_sink
SELECT symbol, ts_ms, trade_id, price, qty, side, exchange, wm, payload, src_partition, src_offset
FROM trades_valid
WHERE wm IS NOT NULL AND TO_TIMESTAMP_LTZ(window_max_ms, 3) <= wm;
