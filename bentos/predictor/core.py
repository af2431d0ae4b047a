"""Prediction logic of the BentoML service, usable without BentoML's server.

:class:`PredictorCore` reads the ``model_v1`` features of (symbol, timeframe) entities from
the Feast online store (Redis), refuses what it must not predict on, and runs the XGBoost
booster (``inplace_predict``) of a model from the BentoML model store.

Refusals (:class:`Refused`, with an HTTP status):

- 404 ``unknown``: Feast has no row for the entity (unknown symbol/timeframe, never written);
- 409 ``not_ready``: some features are null or ``features_ready`` is false (warm-up);
- 409 ``stale``: ``now - event_time > timeframe + serving_max_delay_s`` (or the request's
  ``max_staleness_s``): the stream stopped writing this entity.

Redis unreachable -> :class:`Unavailable` (503). The model's feature list (its metadata)
must equal the feature service's features in the registry, else :class:`FeatureMismatch`
at start and on reload (the old model keeps serving).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from infra.feature_store import SERVICE, FeatureStoreClient
from infra.settings import Settings
from jobs.dataset import timeframe_ms

if TYPE_CHECKING:
    from feast import FeatureService

log = logging.getLogger(__name__)


class Refused(Exception):
    """A prediction the service must not make (bad, unknown, not ready or stale input)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


class Unavailable(Exception):
    """The online store (Redis) cannot be read."""


class FeatureMismatch(RuntimeError):
    """The model was trained on other features than the feature service serves."""


class ModelNotFound(LookupError):
    pass


@dataclass(frozen=True)
class LoadedModel:
    tag: str
    booster: Any = field(repr=False)
    features: tuple[str, ...]
    classes: tuple[str, ...]
    metadata: dict[str, Any] = field(repr=False)


def load_model(tag: str) -> LoadedModel:
    """A booster + its feature list from the BentoML model store (``name:latest`` works)."""
    import bentoml
    from bentoml.exceptions import BentoMLException, NotFound

    try:
        bm = bentoml.models.get(tag)
    except NotFound as e:
        raise ModelNotFound(f"model {tag!r} not in the BentoML model store: {e}") from e
    except BentoMLException as e:  # e.g. InvalidArgument: a malformed tag
        raise ValueError(f"invalid model tag {tag!r}: {e}") from e
    meta: dict[str, Any] = dict(bm.info.metadata)
    if "features" not in meta or "classes" not in meta:
        raise FeatureMismatch(f"model {bm.tag} has no feature list/classes in its metadata")
    booster = bentoml.xgboost.load_model(bm)
    return LoadedModel(str(bm.tag), booster, tuple(meta["features"]), tuple(meta["classes"]), meta)


def resolve_tag(tag: str) -> str:
    """``name:latest`` -> the concrete tag in the store now."""
    import bentoml

    return str(bentoml.models.get(tag).tag)


def service_features(service: FeatureService) -> tuple[str, ...]:
    return tuple(f.name for p in service.feature_view_projections for f in p.features)


def check_features(model: LoadedModel, served: tuple[str, ...]) -> None:
    if model.features != served:
        missing = [f for f in model.features if f not in served]
        extra = [f for f in served if f not in model.features]
        raise FeatureMismatch(
            f"model {model.tag} was trained on {len(model.features)} features that differ from "
            f"feature service {SERVICE!r} ({len(served)} features): missing from the service "
            f"{missing}, not in the model {extra}"
            + ("; same names, other order" if not missing and not extra else "")
        )


class PredictorCore:
    """Feast online read + XGBoost for one settings object; thread-safe model swaps."""

    def __init__(
        self,
        settings: Settings,
        client: FeatureStoreClient | None = None,
        tag: str | None = None,
    ) -> None:
        self.settings = settings
        self.client = client or FeatureStoreClient(settings)
        # cached: get_feature_service reads the registry (milliseconds) on every call
        self.feature_service = self.client.store.get_feature_service(SERVICE)
        self.served = service_features(self.feature_service)
        self._lock = threading.Lock()
        self.model = self._checked(tag or settings.serving_tag)
        self.requested_tag = tag or settings.serving_tag
        import redis

        self._redis = redis.Redis(
            host=settings.redis_host, port=settings.redis_port, socket_timeout=1
        )

    def _checked(self, tag: str) -> LoadedModel:
        model = load_model(tag)
        check_features(model, self.served)
        return model

    # ------------------------------------------------------------------- models
    def reload(self, tag: str | None = None) -> dict[str, Any]:
        """Load ``tag`` (default: the configured one, e.g. ``name:latest``), check its
        features, then swap it in; requests in flight finish on the old model."""
        with self._lock:
            new = self._checked(tag or self.requested_tag)
            old = self.model
            self.model = new
        if new.tag != old.tag:
            log.info("model %s -> %s", old.tag, new.tag)
        return {"model_tag": new.tag, "previous_tag": old.tag, "changed": new.tag != old.tag}

    def poll(self) -> bool:
        """Reload if the configured tag now resolves to another model; True if swapped."""
        try:
            current = resolve_tag(self.requested_tag)
        except Exception as e:  # a store being written to; try again next time
            log.warning("model store poll failed: %s", e)
            return False
        if current == self.model.tag:
            return False
        try:
            return bool(self.reload(current)["changed"])
        except (FeatureMismatch, ModelNotFound) as e:
            log.error("not serving %s: %s", current, e)
            return False

    def ready(self) -> bool:
        try:
            return bool(self._redis.ping())
        except Exception:
            return False

    # -------------------------------------------------------------- prediction
    def online(self, entities: list[tuple[str, str]]) -> tuple[np.ndarray, list[Any], Any]:
        """Feature matrix (float32, model order), per entity (event epoch s | None, problem)."""
        import redis

        rows = [{"symbol": s, "timeframe": tf} for s, tf in entities]
        try:
            resp = self.client.store.get_online_features(
                features=self.feature_service, entity_rows=rows
            )
        except (redis.RedisError, ConnectionError, OSError) as e:
            raise Unavailable(f"online store (Redis) unavailable: {e}") from e
        proto = resp.proto
        names = list(proto.metadata.feature_names.val)
        data = resp.to_dict()
        model = self.model
        x = np.empty((len(rows), len(model.features)), dtype=np.float32)
        for j, name in enumerate(model.features):
            col = data[name]
            x[:, j] = [np.nan if v is None else float(v) for v in col]
        vectors = [proto.results[names.index(n)] for n in model.features]
        info = []
        for i in range(len(rows)):
            present = [v.statuses[i] == 1 for v in vectors]  # FieldStatus.PRESENT
            stamps = [
                v.event_timestamps[i].seconds + v.event_timestamps[i].nanos / 1e9
                for v in vectors
                if v.event_timestamps[i].seconds > 0
            ]
            info.append((min(stamps) if stamps else None, present))
        return x, info, model

    def assess(
        self,
        entity: tuple[str, str],
        x_row: np.ndarray,
        event_s: float | None,
        present: list[bool],
        model: LoadedModel,
        now: float,
        max_staleness_s: float | None,
    ) -> tuple[float, float]:
        """(event epoch s, staleness s) or raise :class:`Refused`."""
        sym, tf = entity
        if event_s is None or not any(present):
            raise Refused(
                404,
                "unknown",
                f"{sym}/{tf}: no online features (unknown symbol or timeframe, "
                "or nothing written yet)",
            )
        nulls = [f for f, p, v in zip(model.features, present, x_row, strict=True) if not p]
        nulls += [
            f for f, v in zip(model.features, x_row, strict=True) if np.isnan(v) and f not in nulls
        ]
        ready = (
            x_row[model.features.index("features_ready")]
            if "features_ready" in model.features
            else 1.0
        )
        if nulls or ready != 1.0:
            raise Refused(
                409,
                "not_ready",
                f"{sym}/{tf}: features not ready (warm-up or missing): "
                + (
                    f"null {nulls[:8]}{'...' if len(nulls) > 8 else ''}"
                    if nulls
                    else "features_ready=false"
                ),
            )
        age = now - event_s
        limit = (
            max_staleness_s
            if max_staleness_s is not None
            else timeframe_ms(tf) / 1000 + self.settings.serving_max_delay_s
        )
        if age > limit:
            raise Refused(
                409,
                "stale",
                f"{sym}/{tf}: features are stale: event time "
                f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(event_s))} is {age:,.0f} s old "
                f"> {limit:,.0f} s allowed",
            )
        return event_s, age

    def predict_many(
        self,
        entities: list[tuple[str, str]],
        max_staleness: list[float | None] | None = None,
        now: float | None = None,
    ) -> tuple[LoadedModel, list[dict[str, Any] | Refused]]:
        """One Feast read + one inplace_predict for all entities; a Refused per bad one."""
        if not entities:
            return self.model, []
        for _, tf in entities:
            timeframe_ms(tf)  # ValueError on a malformed timeframe
        x, info, model = self.online(entities)
        now = time.time() if now is None else now
        stale = max_staleness or [None] * len(entities)
        out: list[dict[str, Any] | Refused] = []
        ok: list[int] = []
        for i, ent in enumerate(entities):
            try:
                ev, age = self.assess(ent, x[i], info[i][0], info[i][1], model, now, stale[i])
                out.append({"event_s": ev, "age": age})
                ok.append(i)
            except Refused as r:
                out.append(r)
        if ok:
            proba = np.asarray(model.booster.inplace_predict(x[ok]))
            up, down = model.classes.index("up"), model.classes.index("down")
            for k, i in enumerate(ok):
                item = out[i]
                assert isinstance(item, dict)
                p = proba[k]
                out[i] = {
                    "symbol": entities[i][0],
                    "timeframe": entities[i][1],
                    "probabilities": {c: float(p[j]) for j, c in enumerate(model.classes)},
                    "signal": float(p[up] - p[down]),
                    "event_time": _iso(item["event_s"]),
                    "staleness_s": round(float(item["age"]), 3),
                }
        return model, out

    def predict(
        self,
        symbols: list[str],
        timeframe: str,
        max_staleness_s: float | None = None,
        now: float | None = None,
    ) -> dict[str, Any]:
        """All symbols or nothing: any refusal refuses the request (404 before 409)."""
        entities = [(s, timeframe) for s in symbols]
        model, out = self.predict_many(entities, [max_staleness_s] * len(entities), now)
        refused = [r for r in out if isinstance(r, Refused)]
        if refused:
            status = 404 if any(r.status == 404 for r in refused) else 409
            reasons = sorted({r.reason for r in refused})
            raise Refused(status, ",".join(reasons), "; ".join(r.message for r in refused))
        return {"model_tag": model.tag, "feature_service": SERVICE, "predictions": out}


def _iso(epoch_s: float) -> str:
    ms = round(epoch_s * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"
