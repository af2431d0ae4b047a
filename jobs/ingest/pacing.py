"""Pacing of a replay: :class:`Pacer` sleeps so messages go out at a multiple of real time
following their event times, with long gaps in event time shortened, or not at all
(``speed=None``, as fast as possible).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Pacer:
    """Sleeps so messages go out at ``speed`` x real time; ``speed=None`` = as fast as possible.
    Gaps in event time longer than ``max_gap_ms`` are shortened to it (captures months apart)."""

    speed: float | None
    max_gap_ms: int = 60_000
    _t0: float = field(default=0.0, init=False)
    _virtual_ms: float = field(default=0.0, init=False)
    _last_ts: int | None = field(default=None, init=False)

    def wait(self, ts_ms: int) -> None:
        if self.speed is None:
            return
        if self._last_ts is None:
            self._t0 = time.monotonic()
        else:
            self._virtual_ms += min(max(ts_ms - self._last_ts, 0), self.max_gap_ms)
        self._last_ts = ts_ms
        delay = self._t0 + self._virtual_ms / 1000.0 / self.speed - time.monotonic()
        if delay > 0:
            time.sleep(delay)
