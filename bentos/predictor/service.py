"""candleflow prediction service (BentoML 1.4, class-based).

    bentoml serve bentos.predictor.service:Predictor         # from the repo root
    cd bentos/predictor && bentoml serve service:Predictor   # or from here
    bentoml build -f bentos/predictor/bentofile.yaml .       # a bento (from the repo root)

Settings come from ``CANDLEFLOW_*`` (infra/settings.py): Redis host/port, Feast project and
registry, ``SERVING_MODEL_TAG`` (default ``MODEL_NAME:latest``), ``SERVING_MAX_DELAY_S``,
``SERVING_MODEL_POLL_S``, ``SERVING_WORKERS``, ``SERVING_HOST`` (default 127.0.0.1) and
``SERVING_PORT`` (3000; ``bentoml serve --host/--port`` override them),
``SERVING_ADMIN_TOKEN`` (model administration, below); the model store is ``$BENTOML_HOME``.

Endpoints (all POST, JSON): ``/predict`` (one or many symbols of one timeframe; all or
nothing), ``/predict_batch`` (adaptive batching; per-item result or error), ``/score``
(feature vectors given by the caller, optional model per item: the strategy job and
walk-forward backtests), ``/reload`` (swap in a new model without downtime), ``/model``
(tag + metadata). Model administration, i.e. ``/reload`` and a ``model`` named in a
``/score`` item, needs ``Authorization: Bearer $CANDLEFLOW_SERVING_ADMIN_TOKEN`` (401
without it, 403 when no token is configured). ``/score`` and ``/predict_batch`` take at most
``MAX_ITEMS`` items (413 above that).
BentoML adds ``GET /readyz`` (calls ``__is_ready__``: model loaded and Redis answers),
``/livez``, ``/metrics`` (Prometheus) and ``/docs.json`` (OpenAPI).
"""

from __future__ import annotations

import logging
import threading
from http import HTTPStatus
from typing import Annotated, Any

import bentoml
from bentoml.exceptions import BentoMLException
from pydantic import BaseModel, Field

from bentos.predictor.core import (
    FeatureMismatch,
    ModelNotFound,
    PredictorCore,
    Refused,
    ScoreItem,
    Unavailable,
)
from bentos.predictor.guard import BatchLimit, admin_refusal
from infra.settings import get_settings
from udfs.contract import (
    MAX_BODY_BYTES,
    MAX_ITEMS,
    SERVING_SYMBOL_PATTERN,
    SERVING_TIMEFRAME_PATTERN,
)

log = logging.getLogger("candleflow.predictor")
SETTINGS = get_settings()
Symbol = Annotated[str, Field(pattern=SERVING_SYMBOL_PATTERN, examples=["BTCUSDT"])]
Timeframe = Annotated[str, Field(pattern=SERVING_TIMEFRAME_PATTERN, examples=["1m"])]
ModelTag = Annotated[
    str, Field(pattern=r"^$|^[a-z0-9_.-]{1,63}(:[A-Za-z0-9_.-]{1,128})?$", max_length=200)
]
# ge, not gt: an OpenAPI 3.0 schema (BentoML serves one) has no numeric exclusiveMinimum
Staleness = Annotated[float, Field(ge=0.001, le=1e10, allow_inf_nan=False)]

REQUESTS = bentoml.metrics.Counter(
    name="candleflow_predictions_total",
    documentation="predictions made or refused, by endpoint and outcome",
    labelnames=["endpoint", "outcome"],
)


class PredictError(BentoMLException):
    """An error with its own HTTP status (404/409/503/...) and a clear message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message, error_code=HTTPStatus(status))


class Item(BaseModel):
    symbol: Symbol
    timeframe: Timeframe = SETTINGS.serving_timeframe
    max_staleness_s: Staleness | None = None


FeatureValue = Annotated[float, Field(allow_inf_nan=False)] | bool | None


class ScoreRequestItem(BaseModel):
    symbol: Symbol
    timeframe: Timeframe = SETTINGS.serving_timeframe
    bar_end_ms: Annotated[int, Field(ge=0, le=10**15, examples=[1609459260000])]
    features: Annotated[dict[str, FeatureValue], Field(max_length=1000)]
    model: ModelTag | None = None


def _admin_refusal(ctx: bentoml.Context) -> tuple[int, str, str] | None:
    """None if this request may administer models (bearer token), else the refusal."""
    return admin_refusal(SETTINGS.serving_admin_token, ctx.request.headers.get("authorization"))


def _error(ctx: bentoml.Context, status: int, reason: str, message: str) -> dict[str, Any]:
    """An error body with its status (BentoML hides the message of a raised 5xx)."""
    ctx.response.status_code = status
    return {"error": message, "reason": reason}


@bentoml.service(
    name="candleflow-predictor",
    workers=SETTINGS.serving_workers,
    traffic={"timeout": 30},
    http={"host": SETTINGS.serving_host, "port": SETTINGS.serving_port},
)
class Predictor:
    def __init__(self) -> None:
        # fails loudly (the server does not start) if the model is missing or its feature
        # list differs from the feature service's
        self.core = PredictorCore(get_settings())
        log.info("serving %s (features of %s)", self.core.model.tag, "model_v1")
        self._stop = threading.Event()
        poll = self.core.settings.serving_model_poll_s
        if poll > 0:
            threading.Thread(target=self._watch, args=(poll,), daemon=True).start()

    def _watch(self, every: float) -> None:
        while not self._stop.wait(every):
            self.core.poll()

    def __is_ready__(self) -> bool:
        return self.core.ready()

    @bentoml.api(route="/predict")
    def predict(
        self,
        symbols: Annotated[
            list[Symbol], Field(min_length=1, max_length=SETTINGS.serving_max_symbols)
        ],
        timeframe: Timeframe = SETTINGS.serving_timeframe,
        max_staleness_s: Staleness | None = None,
        ctx: bentoml.Context = None,  # type: ignore[assignment]
    ) -> dict[str, Any]:
        """Probabilities (down/flat/up) for each symbol from its latest online features.

        All or nothing. Errors: ``{"error": message, "reason": ...}`` with 404 (unknown
        symbol/timeframe), 409 (features not ready or stale), 503 (Redis down).
        """
        try:
            out = self.core.predict(list(symbols), timeframe, max_staleness_s)
        except Refused as r:
            REQUESTS.labels(endpoint="predict", outcome=r.reason).inc()
            return _error(ctx, r.status, r.reason, r.message)
        except Unavailable as e:
            REQUESTS.labels(endpoint="predict", outcome="unavailable").inc()
            return _error(ctx, 503, "unavailable", str(e))
        except ValueError as e:
            return _error(ctx, 400, "bad_request", str(e))
        REQUESTS.labels(endpoint="predict", outcome="ok").inc(len(symbols))
        return out

    # BentoML sheds load with 503 when a request cannot be served within max_latency_ms
    @bentoml.api(route="/predict_batch", batchable=True, max_batch_size=512, max_latency_ms=2000)
    def predict_batch(self, items: list[Item]) -> list[dict[str, Any]]:
        """Per item: a prediction, or ``{"error": {"status", "reason", "message"}}``.

        Adaptive batching merges concurrent requests into one Feast read and one
        inplace_predict; one bad item never fails the others. 503 if Redis is down.
        """
        if not items:  # found by schema fuzzing: an empty batch was a 500
            return []
        try:
            entities = [(it.symbol, it.timeframe) for it in items]
            model, out = self.core.predict_many(entities, [it.max_staleness_s for it in items])
        except Unavailable as e:
            REQUESTS.labels(endpoint="predict_batch", outcome="unavailable").inc(len(items))
            raise PredictError(503, str(e)) from None
        except ValueError as e:
            raise PredictError(400, str(e)) from None
        result: list[dict[str, Any]] = []
        for r in out:
            if isinstance(r, Refused):
                REQUESTS.labels(endpoint="predict_batch", outcome=r.reason).inc()
                result.append(
                    {"error": {"status": r.status, "reason": r.reason, "message": r.message}}
                )
            else:
                REQUESTS.labels(endpoint="predict_batch", outcome="ok").inc()
                result.append({"model_tag": model.tag, **r})
        return result

    @bentoml.api(route="/score")
    def score(
        self,
        items: Annotated[list[ScoreRequestItem], Field(min_length=1, max_length=MAX_ITEMS)],
        ctx: bentoml.Context = None,  # type: ignore[assignment]
    ) -> dict[str, Any]:
        """Probabilities for feature vectors sent by the caller (the strategy job scores the
        rows of its `features` stream; backtests name a walk-forward model per item).

        Per item: a result (``model_tag``, ``probabilities``, ``signal``) or ``{"error":
        {"status", "reason", "message"}}``: 404 unknown_model, 422 bad_model_tag, 400
        missing_features, 409 not_ready / lookahead / feature_mismatch, 401/403 when an item
        names a model without the admin token. No Redis involved.
        """
        denied = _admin_refusal(ctx) if any(it.model for it in items) else None
        out = self.core.score(
            [
                ScoreItem(
                    it.symbol,
                    it.timeframe,
                    it.bar_end_ms,
                    {k: None if v is None else float(v) for k, v in it.features.items()},
                    None if denied else it.model or None,
                )
                for it in items
            ]
        )
        if denied:
            out = [Refused(*denied) if it.model else r for it, r in zip(items, out, strict=True)]
        results: list[dict[str, Any]] = []
        for it, r in zip(items, out, strict=True):
            if isinstance(r, Refused):
                REQUESTS.labels(endpoint="score", outcome=r.reason).inc()
                results.append(
                    {
                        "symbol": it.symbol,
                        "timeframe": it.timeframe,
                        "bar_end_ms": it.bar_end_ms,
                        "error": {"status": r.status, "reason": r.reason, "message": r.message},
                    }
                )
            else:
                REQUESTS.labels(endpoint="score", outcome="ok").inc()
                results.append(r)
        return {"results": results}

    @bentoml.api(route="/reload")
    def reload(
        self,
        tag: ModelTag = "",
        ctx: bentoml.Context = None,  # type: ignore[assignment]
    ) -> dict[str, Any]:
        """Load a model from the store (default: the configured tag, e.g. ``name:latest``),
        check its features and swap it in; in-flight requests finish on the old one.
        404: no such model; 409: its features differ (the old model keeps serving); 401/403:
        no or a wrong admin token (see the module docstring)."""
        denied = _admin_refusal(ctx)
        if denied:
            return _error(ctx, *denied)
        try:
            return self.core.reload(tag or None)
        except ModelNotFound as e:
            return _error(ctx, 404, "unknown_model", str(e))
        except FeatureMismatch as e:
            return _error(ctx, 409, "feature_mismatch", str(e))
        except ValueError as e:
            return _error(ctx, 400, "bad_request", f"bad tag {tag!r}: {e}")

    @bentoml.api(route="/model")
    def model(self) -> dict[str, Any]:
        """The model being served: tag, features, classes, training window, metrics."""
        m = self.core.model
        keep = ("training_start", "training_end", "label", "metrics", "feature_service")
        return {
            "model_tag": m.tag,
            "features": list(m.features),
            "classes": list(m.classes),
            **{k: m.metadata.get(k) for k in keep},
        }


# BentoML does not bound the request list of an adaptive-batching endpoint (200,000 items
# were queued, then answered 503 after 3.8 s while other clients stalled): refuse first
Predictor.add_asgi_middleware(  # type: ignore[attr-defined]
    BatchLimit,
    paths=("/predict_batch", "/score"),
    max_items=MAX_ITEMS,
    max_bytes=MAX_BODY_BYTES,
)
