"""HTTP client of the predictor's ``POST /score`` for the strategy job (no pyflink import).

One :meth:`PredictClient.score` call scores a frame of ``features`` rows (the strategy job's
vectorized UDF hands it one Arrow batch) with one HTTP request (chunks of at most
:data:`MAX_ITEMS`, the endpoint's limit) and returns one prediction row per input row, in
order, with a ``status``:

- ``ok``: the service scored the row (``model_tag``, ``p_down``/``p_flat``/``p_up``,
  ``signal = p_up - p_down``);
- ``refused``: the service (or this client, before sending) refused this row: ``reason`` is
  the service's per-item reason (``not_ready``, ``lookahead``, ``unknown_model``,
  ``missing_features``, ...), ``no_model`` (the schedule names no model for this bar) or
  ``invalid_input`` (a symbol/timeframe the endpoint's schema would reject: sent alone it
  would fail the whole request);
- ``degraded``: no answer: the call failed after ``retries`` retries (exponential backoff,
  tenacity) on a connection error, a timeout, a 5xx or 429, or a malformed answer. The
  client then opens a circuit for ``circuit_open_s`` seconds: rows in that time are
  degraded at once (``reason`` starts with ``circuit_open``) without a call, so a down
  service costs one failed call per interval, not one per batch. The first call after the
  interval is a single try (no retries); success closes the circuit.

Walk-forward backtests pass a ``schedule``: ``[{"from_ms": int, "tag": str}, ...]``; each
row is scored by the tag with the largest ``from_ms <= bar_end_ms`` (the item's ``model``).
Without a schedule the service's own model scores every row.
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from udfs.contract import (
    CLASSES,
    MAX_ITEMS,
    SERVING_SYMBOL_PATTERN,
    SERVING_TIMEFRAME_PATTERN,
)
from udfs.topics import pandas_dtypes

log = logging.getLogger(__name__)

OK, REFUSED, DEGRADED = "ok", "refused", "degraded"
# the columns score() returns, with their pandas dtypes (the UDF's result ROW, in order)
KEY_COLUMNS = ("symbol", "timeframe", "bar_end_ms")
# the UDF's result: the `predictions` model (udfs/topics.py) less the row's key columns
PREDICTION_COLUMNS: dict[str, str] = pandas_dtypes("predictions", without=KEY_COLUMNS)
# what the endpoint's request schema accepts (bentos/predictor/service.py)
_SYMBOL = re.compile(SERVING_SYMBOL_PATTERN)
_TIMEFRAME = re.compile(SERVING_TIMEFRAME_PATTERN)


@dataclass(frozen=True)
class ScheduleEntry:
    """From ``from_ms`` (a bar end, inclusive) on, score with model ``tag``."""

    from_ms: int
    tag: str


def parse_schedule(entries: Sequence[dict[str, Any]] | None) -> list[ScheduleEntry]:
    """``[{"from_ms": int, "tag": str}, ...]`` -> entries sorted by ``from_ms`` (unique)."""
    out = sorted(
        (ScheduleEntry(int(e["from_ms"]), str(e["tag"])) for e in entries or []),
        key=lambda e: e.from_ms,
    )
    starts = [e.from_ms for e in out]
    if len(set(starts)) != len(starts):
        raise ValueError(f"model schedule has repeated from_ms: {starts}")
    if any(not e.tag for e in out):
        raise ValueError("model schedule entry with an empty tag")
    return out


def load_schedule(path: Path | str | None) -> list[ScheduleEntry]:
    """The schedule from a JSON file (``settings.predict_model_schedule``); none -> []."""
    if path is None or str(path) == "":
        return []
    data = json.loads(Path(path).read_text())
    if not isinstance(data, list):
        raise ValueError(f"{path}: a model schedule is a JSON list of {{from_ms, tag}}")
    return parse_schedule(data)


def schedule_tags(schedule: Sequence[ScheduleEntry], bar_end_ms: np.ndarray) -> list[str | None]:
    """Per bar end: the tag of the last entry with ``from_ms <= bar_end_ms`` (None: none)."""
    starts = [e.from_ms for e in schedule]
    out: list[str | None] = []
    for t in bar_end_ms.tolist():
        k = bisect.bisect_right(starts, int(t)) - 1
        out.append(schedule[k].tag if k >= 0 else None)
    return out


def _feature_value(v: Any) -> float | None:
    """JSON value of one feature: finite float, else null (booleans -> 1.0/0.0)."""
    if v is None or v is pd.NA:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def build_items(
    frame: pd.DataFrame, features: Sequence[str], models: Sequence[str | None] | None = None
) -> list[dict[str, Any]]:
    """The ``/score`` items of ``frame``'s rows (columns: symbol, timeframe, bar_end_ms and
    ``features``), one per row in order; ``models[i]`` names row i's model (None: served)."""
    cols = {f: frame[f].to_numpy(dtype=object) for f in features}
    items: list[dict[str, Any]] = []
    syms = frame["symbol"].astype(str).tolist()
    tfs = frame["timeframe"].astype(str).tolist()
    ends = frame["bar_end_ms"].astype("int64").tolist()
    for i in range(len(frame)):
        item: dict[str, Any] = {
            "symbol": syms[i],
            "timeframe": tfs[i],
            "bar_end_ms": ends[i],
            "features": {f: _feature_value(cols[f][i]) for f in features},
        }
        if models is not None and models[i] is not None:
            item["model"] = models[i]
        items.append(item)
    return items


class CallFailed(Exception):
    """A /score call that may succeed if retried (network, timeout, 5xx, 429, bad body)."""


class RequestRejected(Exception):
    """The service rejected the whole request (4xx other than 429): not worth a retry."""


def empty_result(n: int) -> pd.DataFrame:
    """``n`` prediction rows with every value null (status filled in by the caller)."""
    return pd.DataFrame(
        {
            "model_tag": [None] * n,
            "p_down": np.full(n, np.nan),
            "p_flat": np.full(n, np.nan),
            "p_up": np.full(n, np.nan),
            "signal": np.full(n, np.nan),
            "status": [None] * n,
            "reason": [None] * n,
            "latency_ms": np.full(n, np.nan),
            "predicted_at_ms": np.zeros(n, dtype=np.int64),
        }
    )


class PredictClient:
    """Scores frames of feature rows over ``POST {url}/score`` with retries, a circuit
    breaker and an optional walk-forward model schedule (see the module docstring)."""

    def __init__(
        self,
        url: str,
        timeout_s: float = 2.0,
        retries: int = 2,
        circuit_open_s: float = 5.0,
        schedule: Sequence[ScheduleEntry | dict[str, Any]] | None = None,
        features: Sequence[str] | None = None,
        *,
        backoff_s: float = 0.1,
        max_backoff_s: float = 2.0,
        max_items: int = MAX_ITEMS,
        admin_token: str | None = None,
    ) -> None:
        if features is None:
            from udfs.model_features import FEATURES

            features = FEATURES
        self.url = url.rstrip("/") + "/score"
        self.timeout_s = timeout_s
        self.retries = retries
        self.circuit_open_s = circuit_open_s
        self.schedule: list[ScheduleEntry] | None = (
            parse_schedule(
                [
                    e if isinstance(e, dict) else {"from_ms": e.from_ms, "tag": e.tag}
                    for e in schedule or []
                ]
            )
            or None
        )
        self.features = tuple(features)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_items = max(1, min(max_items, MAX_ITEMS))
        self.open_until = 0.0  # monotonic time until which the circuit is open
        self.last_error: str | None = None
        self.stats = {"calls": 0, "failed_calls": 0, "retries": 0, "short_circuited": 0}
        self._session: Any = None
        # a schedule's per-item models need `Authorization: Bearer <token>` (/score)
        self._headers = {"Authorization": f"Bearer {admin_token}"} if admin_token else {}

    # ------------------------------------------------------------------ HTTP
    @property
    def session(self) -> Any:
        """One keep-alive ``requests.Session`` per client (created on first use)."""
        if self._session is None:
            import requests

            self._session = requests.Session()
            self._session.headers.update(self._headers)
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def _post_once(self, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        import requests

        try:
            r = self.session.post(self.url, json={"items": items}, timeout=self.timeout_s)
        except requests.RequestException as e:
            self.close()  # a pooled connection may be dead (server restarted): start afresh
            raise CallFailed(f"{type(e).__name__}: {e}") from e
        if r.status_code >= 500 or r.status_code == 429:
            raise CallFailed(f"HTTP {r.status_code}: {r.text[:300]}")
        if r.status_code != 200:
            raise RequestRejected(f"HTTP {r.status_code}: {r.text[:300]}")
        try:
            results = r.json()["results"]
        except (ValueError, KeyError, TypeError) as e:
            raise CallFailed(f"malformed /score answer: {e}: {r.text[:200]}") from e
        if not isinstance(results, list) or len(results) != len(items):
            raise CallFailed(
                f"/score answered {len(results) if isinstance(results, list) else '?'} "
                f"results for {len(items)} items"
            )
        return results

    def _log_retry(self, state: RetryCallState) -> None:
        self.stats["retries"] += 1
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "/score attempt %d failed (%s); retrying in %.2fs",
            state.attempt_number,
            exc,
            state.next_action.sleep if state.next_action else 0.0,
        )

    def _post(self, items: list[dict[str, Any]], attempts: int) -> list[dict[str, Any]]:
        """One call with up to ``attempts`` tries (exponential backoff between them)."""
        retrying = Retrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential(multiplier=self.backoff_s, max=self.max_backoff_s),
            retry=retry_if_exception_type(CallFailed),
            before_sleep=self._log_retry,
            reraise=True,
        )
        return retrying(self._post_once, items)

    # ----------------------------------------------------------------- score
    def circuit_open(self, now: float | None = None) -> bool:
        """Whether calls are suspended (a recent call failed after its retries)."""
        return (time.monotonic() if now is None else now) < self.open_until

    def score(self, frame: pd.DataFrame) -> pd.DataFrame:
        """One prediction row per row of ``frame`` (same order, index 0..n-1); never raises
        for a service problem (rows come back ``degraded`` or ``refused`` instead)."""
        n = len(frame)
        out = empty_result(n)
        if n == 0:
            return out
        t0 = time.monotonic()
        ends = frame["bar_end_ms"].to_numpy(dtype=np.int64)
        models: list[str | None] | None = None
        send = np.ones(n, dtype=bool)
        if self.schedule is not None:
            models = schedule_tags(self.schedule, ends)
            for i, m in enumerate(models):
                if m is None:
                    self._set(out, i, REFUSED, "no_model")
                    send[i] = False
        syms = frame["symbol"].astype(str).tolist()
        tfs = frame["timeframe"].astype(str).tolist()
        for i in range(n):
            if send[i] and not (_SYMBOL.match(syms[i]) and _TIMEFRAME.match(tfs[i])):
                self._set(out, i, REFUSED, f"invalid_input: symbol {syms[i]!r}/{tfs[i]!r}")
                send[i] = False
        idx = np.flatnonzero(send)
        if len(idx):
            self._score_rows(frame, idx, models, out)
        now_ms = int(time.time() * 1000)
        out["latency_ms"] = (time.monotonic() - t0) * 1000.0
        out["predicted_at_ms"] = now_ms
        return out

    def _score_rows(
        self,
        frame: pd.DataFrame,
        idx: np.ndarray,
        models: list[str | None] | None,
        out: pd.DataFrame,
    ) -> None:
        sub = frame.iloc[idx]
        sub_models = None if models is None else [models[i] for i in idx]
        items = build_items(sub, self.features, sub_models)
        for a in range(0, len(items), self.max_items):
            chunk = items[a : a + self.max_items]
            rows = idx[a : a + self.max_items]
            now = time.monotonic()
            if self.circuit_open(now):
                self.stats["short_circuited"] += 1
                reason = f"circuit_open: {self.last_error}"
                for i in rows:
                    self._set(out, int(i), DEGRADED, reason)
                continue
            half_open = self.open_until > 0  # first try after an open interval: no retries
            attempts = 1 if half_open else self.retries + 1
            self.stats["calls"] += 1
            t_call = time.monotonic()
            try:
                results = self._post(chunk, attempts)
            except CallFailed as e:
                self.stats["failed_calls"] += 1
                self.last_error = str(e)
                self.open_until = time.monotonic() + self.circuit_open_s
                log.error(
                    "/score failed after %d attempt(s) (%s): %d rows degraded; circuit open "
                    "for %.1fs",
                    attempts,
                    e,
                    len(chunk),
                    self.circuit_open_s,
                )
                for i in rows:
                    self._set(out, int(i), DEGRADED, str(e))
                continue
            except RequestRejected as e:
                log.error("/score rejected the request (%s): %d rows refused", e, len(chunk))
                for i in rows:
                    self._set(out, int(i), REFUSED, f"bad_request: {e}")
                continue
            if half_open:
                log.warning("/score answers again: circuit closed (was: %s)", self.last_error)
                self.open_until = 0.0
            log.debug("/score %d items in %.1f ms", len(chunk), (time.monotonic() - t_call) * 1e3)
            for i, res in zip(rows, results, strict=True):
                self._apply(out, int(i), res)

    @staticmethod
    def _set(out: pd.DataFrame, i: int, status: str, reason: str | None) -> None:
        out.at[i, "status"] = status
        out.at[i, "reason"] = reason

    @staticmethod
    def _apply(out: pd.DataFrame, i: int, res: Any) -> None:
        """One per-item result of /score into row ``i``."""
        if not isinstance(res, dict):
            PredictClient._set(out, i, DEGRADED, f"malformed result: {res!r}"[:300])
            return
        err = res.get("error")
        if err is not None:
            reason = err.get("reason", "error") if isinstance(err, dict) else "error"
            msg = err.get("message", "") if isinstance(err, dict) else str(err)
            PredictClient._set(out, i, REFUSED, f"{reason}: {msg}" if msg else str(reason))
            return
        try:
            probs = res["probabilities"]
            p = {c: float(probs[c]) for c in CLASSES}
        except (KeyError, TypeError, ValueError) as e:
            PredictClient._set(out, i, DEGRADED, f"malformed result: {e}")
            return
        out.at[i, "model_tag"] = res.get("model_tag")
        out.at[i, "p_down"] = p["down"]
        out.at[i, "p_flat"] = p["flat"]
        out.at[i, "p_up"] = p["up"]
        out.at[i, "signal"] = p["up"] - p["down"]
        PredictClient._set(out, i, OK, None)
