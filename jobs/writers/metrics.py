"""What a writer reports about its progress.

:class:`MetricsMixin` (a part of :class:`~jobs.writers.base.KafkaBatchWriter`) sums the
time spent per step, looks up the consumer lag and logs the progress lines;
:func:`_count_batch` adds a committed batch to the Prometheus counters
(infra/freshness.py).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from jobs.writers.config import Batch, WriterStats

log = logging.getLogger(__name__)


class MetricsMixin:
    """Step times, lag and progress log lines (a part of :class:`KafkaBatchWriter`)."""

    # set by KafkaBatchWriter
    topics: list[str]
    stats: WriterStats
    _consumer: Any

    def _add_time(self, step: str, since: float) -> None:
        st = self.stats.step_s
        st[step] = st.get(step, 0.0) + time.monotonic() - since

    def lag(self) -> dict[str, int]:
        """Per ``topic[partition]``: high watermark - committed position (approximate on
        Tansu, whose high watermark is the base offset of the last batch + 1)."""
        from confluent_kafka import TopicPartition

        out: dict[str, int] = {}
        if self._consumer is None:
            return out
        try:
            for tp in self._consumer.assignment():
                _, high = self._consumer.get_watermark_offsets(
                    TopicPartition(tp.topic, tp.partition), timeout=2, cached=False
                )
                pos = self.stats.committed.get(tp.topic, {}).get(tp.partition, 0)
                out[f"{tp.topic}[{tp.partition}]"] = max(high - pos, 0)
        except Exception as e:  # lag is informational only
            log.debug("lag lookup failed: %s", e)
        return out

    def _log_progress(self, interval_s: float, rows: int, *, final: bool = False) -> None:
        st = self.stats
        total_s = (st.last_commit_at or time.monotonic()) - (st.first_row_at or st.ready_at)
        rate = rows / interval_s if interval_s else (st.rows / total_s if total_s > 0 else 0.0)
        per_topic = f" {st.rows_by_topic}" if len(self.topics) > 1 else ""
        log.info(
            "%s%d rows%s in %d batches (%s rows/s), dead-lettered %d, committed %s, lag %s%s",
            "done: " if final else "",
            st.rows,
            per_topic,
            st.batches,
            f"{rate:,.0f}",
            st.dead_lettered,
            st.committed,
            self.lag(),
            f", retries {st.retries}" if st.retries else "",
        )


def _count_batch(writer: str, batch: Batch) -> None:
    """Prometheus counters of a committed batch (infra/freshness.py)."""
    from infra.freshness import count_batch

    dlq: dict[str, int] = {}
    for _, topic, _ in batch.dlq:
        dlq[topic] = dlq.get(topic, 0) + 1
    count_batch(writer, {t: len(r) for t, r in batch.rows.items()}, dlq)
