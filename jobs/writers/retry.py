"""How a writer's write step is retried.

:meth:`RetryingMixin._retrying` (a part of :class:`~jobs.writers.base.KafkaBatchWriter`)
runs one step, retries transient errors (:func:`~jobs.writers.errors.is_transient`) with
exponential backoff, logged, until ``retry_timeout_s`` or a stop request, and turns a data
error (:func:`~jobs.writers.errors.is_data_error`) into
:class:`~jobs.writers.errors.RowsRejected` naming the step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_delay,
    stop_any,
    stop_never,
    wait_exponential,
)
from tenacity.stop import stop_base

from jobs.writers.config import WriterConfig
from jobs.writers.errors import RowsRejected, _short, is_data_error, is_transient
from jobs.writers.metrics import MetricsMixin

log = logging.getLogger(__name__)
T = TypeVar("T")


class RetryingMixin(MetricsMixin):
    """Write steps retried with backoff (a part of :class:`KafkaBatchWriter`)."""

    # set by KafkaBatchWriter
    config: WriterConfig
    _stop: bool

    def _retrying(self, what: str, fn: Callable[[], T]) -> T:
        """Run ``fn``; retry transient errors with backoff (logged); a data error
        (:func:`is_data_error`) becomes :class:`RowsRejected` naming ``what``; re-raise
        the rest."""
        cfg = self.config
        t0 = time.monotonic()
        first_failure: list[float] = []

        def before_sleep(rs: RetryCallState) -> None:
            exc = rs.outcome.exception() if rs.outcome else None
            if not first_failure:
                first_failure.append(time.monotonic())
                log.warning("%s: write failed (%s); retrying with backoff", what, _short(exc))
            self.stats.retries[what] = self.stats.retries.get(what, 0) + 1
            log.warning(
                "%s still failing after %d attempt(s), %.1f s: %s; next try in %.1f s",
                what,
                rs.attempt_number,
                time.monotonic() - first_failure[0],
                _short(exc),
                rs.upcoming_sleep,
            )

        retrying = Retrying(
            retry=retry_if_exception(is_transient),
            wait=wait_exponential(multiplier=0.2, max=cfg.max_backoff_s),
            stop=stop_any(  # SIGTERM while retrying: stop, no commit
                stop_after_delay(cfg.retry_timeout_s) if cfg.retry_timeout_s else stop_never,
                _StopRequested(self),
            ),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            out = retrying(fn)
        except Exception as e:
            if not isinstance(e, RowsRejected) and is_data_error(e):
                raise RowsRejected(what, e) from e
            raise
        self._add_time(what, t0)
        if first_failure:
            log.warning(
                "%s recovered: written after %.1f s of failures",
                what,
                time.monotonic() - first_failure[0],
            )
        return out


class _StopRequested(stop_base):
    def __init__(self, writer: RetryingMixin) -> None:
        self.writer = writer

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.writer._stop
