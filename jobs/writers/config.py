"""The data a writer's loop works with.

:class:`WriterConfig`: batch size and wait, stop conditions, backoff, the consumer group;
:class:`Batch`: one micro-batch (rows per topic, their :class:`Source` messages, the
dead-letter records, the offsets to commit); :class:`WriterStats`: what a run did (rows,
batches, dead-lettered messages, retries, committed offsets, time per step).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from infra.settings import Settings


@dataclass
class WriterConfig:
    group_id: str
    max_batch: int = 5_000
    max_wait_ms: int = 1_000
    until_idle_s: float = 0.0  # stop after this long without messages (0 = run forever)
    once: bool = False  # stop after one non-empty batch
    log_every_s: float = 5.0
    max_backoff_s: float = 10.0
    retry_timeout_s: float = 0.0  # give up on a transient failure after this (0 = never)
    from_beginning: bool = False  # first assignment: start at the earliest offsets (replay)

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: Any) -> WriterConfig:
        """Batch/backoff settings of ``settings``; ``group_id`` defaults to the feature
        writer's group. Overrides that are ``None`` are ignored."""
        cfg = cls(
            group_id=settings.writer_group_id,
            max_batch=settings.writer_max_batch,
            max_wait_ms=settings.writer_max_wait_ms,
            max_backoff_s=settings.writer_max_backoff_s,
        )
        for k, v in overrides.items():
            if v is not None:
                setattr(cfg, k, v)
        return cfg


@dataclass(frozen=True)
class Source:
    """Where a row came from (to dead-letter it if a store rejects it)."""

    partition: int
    offset: int
    raw: bytes | None


@dataclass
class Batch:
    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # topic -> rows
    # topic -> the rows' messages, aligned with ``rows`` (empty in hand-made batches)
    sources: dict[str, list[Source]] = field(default_factory=dict)
    dlq: list[tuple[str, str, bytes]] = field(default_factory=list)  # (reason, topic, record)
    next_offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # last + 1
    first_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    messages: int = 0

    @property
    def n_rows(self) -> int:
        return sum(len(r) for r in self.rows.values())

    def items(self) -> list[tuple[str, int]]:
        """(topic, index) of every row, in topic order."""
        return [(t, i) for t, rows in self.rows.items() for i in range(len(rows))]

    def subset(self, items: Sequence[tuple[str, int]]) -> Batch:
        """A batch of just these rows (for :meth:`KafkaBatchWriter._write`)."""
        sub = Batch()
        for t, i in items:
            sub.rows.setdefault(t, []).append(self.rows[t][i])
            if t in self.sources:
                sub.sources.setdefault(t, []).append(self.sources[t][i])
        return sub


@dataclass
class WriterStats:
    rows: int = 0
    dead_lettered: int = 0
    batches: int = 0
    commits_failed: int = 0
    retries: dict[str, int] = field(default_factory=dict)
    started_at: float = field(default_factory=time.monotonic)
    ready_at: float = 0.0  # after the one-time start work and the consumer
    first_row_at: float = 0.0  # first message of the run received
    last_commit_at: float = 0.0
    # (monotonic time of the commit, rows in the batch, seconds spent writing it)
    batch_log: list[tuple[float, int, float]] = field(default_factory=list)
    committed: dict[str, dict[int, int]] = field(default_factory=dict)  # topic -> p -> offset
    rows_by_topic: dict[str, int] = field(default_factory=dict)
    dlq_reasons: dict[str, int] = field(default_factory=dict)
    step_s: dict[str, float] = field(default_factory=dict)  # seconds per write step, summed
