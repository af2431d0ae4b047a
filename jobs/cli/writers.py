"""``candleflow candles|features|trading write``: the topics -> ClickHouse / Feast writers.

All three take the same options (:mod:`jobs.cli.options`) and stop with exit 1 when the
broker lost data they had committed (:func:`jobs.cli.common.until_broker_reset`).
"""

from __future__ import annotations

from infra.settings import get_settings
from jobs.cli.common import console, fail, until_broker_reset
from jobs.cli.options import (
    FromBeginning,
    GroupId,
    LogEvery,
    MaxBatch,
    MaxWaitMs,
    Once,
    RetryTimeout,
    UntilIdle,
    writer_overrides,
)


def candles_write(
    group_id: GroupId = "",
    from_beginning: FromBeginning = False,
    max_batch: MaxBatch = 0,
    max_wait_ms: MaxWaitMs = 0,
    once: Once = False,
    until_idle: UntilIdle = 0.0,
    retry_timeout: RetryTimeout = 0.0,
    log_every: LogEvery = 5.0,
) -> None:
    """Write `candles` to ClickHouse (`candles`, one row per window under FINAL).

    Micro-batches from a consumer group (default CANDLEFLOW_CANDLES_GROUP_ID); malformed
    messages go to CANDLEFLOW_TOPIC_CANDLES_DLQ with a reason; offsets are committed after
    the insert (at-least-once + idempotent rows: candles re-emitted after a job restart
    collapse under FINAL).
    """
    from jobs.writers.candles import run_candles_writer
    from jobs.writers.config import WriterConfig

    s = get_settings()
    opts = writer_overrides(
        group_id,
        from_beginning,
        max_batch,
        max_wait_ms,
        once,
        until_idle,
        retry_timeout,
        log_every,
    )
    opts["group_id"] = opts["group_id"] or s.candles_group_id
    st = until_broker_reset(run_candles_writer, s, WriterConfig.from_settings(s, **opts))
    console.print(
        f"wrote {st.rows:,} candles in {st.batches:,} batches; dead-lettered "
        f"{st.dead_lettered:,} -> {s.topic_candles_dlq}; committed {st.committed}"
    )


def features_write(
    group_id: GroupId = "",
    from_beginning: FromBeginning = False,
    max_batch: MaxBatch = 0,
    max_wait_ms: MaxWaitMs = 0,
    once: Once = False,
    until_idle: UntilIdle = 0.0,
    retry_timeout: RetryTimeout = 0.0,
    log_every: LogEvery = 5.0,
) -> None:
    """Write `features` to the offline store, Redis (Feast online) and ClickHouse.

    Micro-batches from a consumer group (default CANDLEFLOW_WRITER_GROUP_ID); offsets are
    committed only after all three stores (and the dead-letter topic, for malformed
    messages) have the batch: at-least-once with idempotent writes, so a replay changes
    nothing visible. Unreachable stores are retried with backoff. SIGTERM/Ctrl-C finishes
    the current batch and commits it.
    """
    from jobs.writers.features import WriterConfig, run_writer

    s = get_settings()
    opts = writer_overrides(
        group_id,
        from_beginning,
        max_batch,
        max_wait_ms,
        once,
        until_idle,
        retry_timeout,
        log_every,
    )
    st = until_broker_reset(run_writer, s, WriterConfig.from_settings(s, **opts))
    console.print(
        f"wrote {st.rows:,} rows in {st.batches:,} batches; dead-lettered {st.dead_lettered:,} "
        f"-> {s.topic_features_dlq}; committed {st.committed}"
    )


def trading_write(
    group_id: GroupId = "",
    from_beginning: FromBeginning = False,
    max_batch: MaxBatch = 0,
    max_wait_ms: MaxWaitMs = 0,
    once: Once = False,
    until_idle: UntilIdle = 0.0,
    retry_timeout: RetryTimeout = 0.0,
    log_every: LogEvery = 5.0,
) -> None:
    """Write `predictions`, `orders`, `fills`, `equity` to ClickHouse (migration 005).

    Micro-batches from a consumer group (default CANDLEFLOW_TRADING_GROUP_ID); malformed
    messages go to `<topic>_dlq` with a reason; offsets are committed only after the
    inserts: at-least-once, and replays change nothing under FINAL (ReplacingMergeTree
    keys, versions from the messages). An unreachable ClickHouse is retried with backoff.
    SIGTERM/Ctrl-C finishes the batch.
    """
    from jobs.writers.trading import run_trading_writer, topic_kinds, trading_config

    s = get_settings()
    opts = writer_overrides(
        group_id,
        from_beginning,
        max_batch,
        max_wait_ms,
        once,
        until_idle,
        retry_timeout,
        log_every,
    )
    try:
        topic_kinds(s)
    except ValueError as e:
        fail(str(e))
    w = until_broker_reset(run_trading_writer, s, trading_config(s, **opts))
    st = w.stats
    console.print(
        f"wrote {st.rows:,} rows {w.rows_by_kind()} in {st.batches:,} batches; "
        f"dead-lettered {st.dead_lettered:,} -> <topic>_dlq; committed {st.committed}"
    )
