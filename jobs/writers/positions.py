"""The committed-position and broker-reset bookkeeping of a writer.

:class:`PositionsMixin` (a part of :class:`~jobs.writers.base.KafkaBatchWriter`) commits
a batch's end offsets, keeps the group's committed positions in
``STATE_DIR/writer-positions/<group>.json`` as well, and checks them on each assignment and
out-of-range error: a partition the group never committed starts at the beginning; one
whose commits (or log) the broker lost stops the writer with
:class:`~infra.kafka.BrokerReset` instead of re-reading from offset 0 what is left.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from infra.kafka import BrokerReset
from jobs.writers.config import Batch, WriterConfig, WriterStats

log = logging.getLogger(__name__)


def _safe_name(text: str) -> str:
    """A group id as a file name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text) or "_"


class PositionsMixin:
    """Commits and the committed positions (a part of :class:`KafkaBatchWriter`)."""

    # set by KafkaBatchWriter
    config: WriterConfig
    stats: WriterStats
    _consumer: Any
    _assigned_at: float
    _rewound: bool
    _fatal: BrokerReset | None
    _positions_file: Path
    _positions: dict[str, int]

    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        from confluent_kafka import OFFSET_BEGINNING

        self._assigned_at = time.monotonic()
        if self.config.from_beginning and not self._rewound:
            for p in partitions:
                p.offset = OFFSET_BEGINNING
            consumer.assign(partitions)
            self._rewound = True  # a later rebalance resumes from the commits
        else:
            try:
                committed = consumer.committed(partitions, timeout=10)
            except Exception as e:  # the broker is slow: use the commits as they are
                log.warning("could not read committed offsets on assignment: %s", e)
                committed = []
            fresh = False
            for p, c in zip(partitions, committed, strict=True):
                key = f"{p.topic}[{p.partition}]"
                known = self._positions.get(key, 0)
                # commits gone although we made some: the broker lost them (an operator's
                # deliberate reset commits an offset, so it still passes)
                if known > 0 and c.offset < 0:
                    self._fatal = BrokerReset(
                        f"{key}: this group had committed offset {known:,}, the broker now "
                        "has none: it lost data "
                        "(the local broker keeps topics in memory; a restart drops them). "
                        f"Not starting over silently; to accept the loss, delete "
                        f"{self._positions_file} or use another group id"
                    )
                if c.offset < 0:  # no commit yet: from the beginning
                    p.offset = OFFSET_BEGINNING
                    fresh = True
            if fresh:
                consumer.assign(partitions)
        log.info(
            "assigned %s%s",
            [f"{p.topic}[{p.partition}]" for p in partitions],
            " (from the beginning)" if self._rewound and self.config.from_beginning else "",
        )

    def _offset_out_of_range(self, topic: str, partition: int, error: str) -> None:
        """No valid position (``auto.offset.reset`` is ``error``): a partition this group
        never committed starts at the beginning; one it did is a :class:`BrokerReset`."""
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        key = f"{topic}[{partition}]"
        if not self._positions.get(key):  # a new group: from the beginning
            self._consumer.seek(TopicPartition(topic, partition, OFFSET_BEGINNING))
            return
        self._fatal = BrokerReset(
            f"{key}: {error}: the position is beyond the end of the log, so the broker lost "
            "messages (the local broker keeps topics in memory; a restart drops them)"
        )

    def _commit(self, batch: Batch) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(batch.next_offsets.items())]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
            for (t, p), o in batch.next_offsets.items():
                self.stats.committed.setdefault(t, {})[p] = o
                self._positions[f"{t}[{p}]"] = o
            self._save_positions()
        except KafkaException as e:
            # e.g. the group rebalanced during a long retry: the batch is written, a new
            # owner re-reads it from the last commit and re-writes it (idempotent)
            self.stats.commits_failed += 1
            log.warning("commit of %s failed (%s); the rows will be re-delivered", offsets, e)

    def _load_positions(self) -> dict[str, int]:
        try:
            data = json.loads(self._positions_file.read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _save_positions(self) -> None:
        path = self._positions_file
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._positions, sort_keys=True))
            tmp.replace(path)
        except OSError as e:  # the positions are a safety net, not the commit itself
            log.warning("could not record positions in %s: %s", path, e)
