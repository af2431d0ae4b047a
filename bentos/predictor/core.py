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
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from infra.feature_store import SERVICE, FeatureStoreClient
from infra.settings import Settings
from udfs.contract import timeframe_ms

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


@dataclass(frozen=True)
class ScoreItem:
    """One feature vector to score (``/score``); ``model`` empty = the served model."""

    symbol: str
    timeframe: str
    bar_end_ms: int
    features: dict[str, float | None]
    model: str | None = None


def knowledge_end_ms(model: LoadedModel) -> int | None:
    """The first bar end a model may score without looking ahead: its last training row's
    time plus the label horizon plus one bar (metadata of ``jobs/ml/artefact.py``); None when the
    metadata does not say (models from elsewhere)."""
    meta = model.metadata
    try:
        end = datetime.fromisoformat(str(meta["training_end"]).replace("Z", "+00:00"))
        if end.tzinfo is None:
            end = end.replace(tzinfo=UTC)
        bar = timeframe_ms(str(meta.get("timeframes", ["1m"])[0]))
        horizon = int(meta.get("horizon_bars", 0))
    except (KeyError, ValueError, TypeError, IndexError):
        return None
    return int(end.timestamp() * 1000) + (horizon + 1) * bar


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
    """``name:latest`` -> the concrete tag in the store now (``ModelNotFound`` if there is
    none, ``ValueError`` for a tag BentoML cannot parse, e.g. ``.``, ``a.`` or ``x-``)."""
    import bentoml
    from bentoml.exceptions import BentoMLException, NotFound

    try:
        return str(bentoml.models.get(tag).tag)
    except NotFound as e:
        raise ModelNotFound(f"model {tag!r} not in the BentoML model store: {e}") from e
    except BentoMLException as e:
        raise ValueError(f"invalid model tag {tag!r}: {e}") from e


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
        # index (in model order) of the first feature of each feature view
        self._view_heads = [
            self.served.index(p.features[0].name)
            for p in self.feature_service.feature_view_projections
            if p.features
        ]
        self._lock = threading.Lock()
        self._models: dict[str, LoadedModel] = {}
        self.model = self._checked(tag or settings.serving_tag)
        self.requested_tag = tag or settings.serving_tag
        import redis

        self._redis = redis.Redis(
            host=settings.redis_host,
            port=settings.redis_port,
            password=settings.redis_password.get_secret_value()
            if settings.redis_password
            else None,
            socket_timeout=1,
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
    def online(
        self, entities: list[tuple[str, str]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, LoadedModel]:
        """One Feast online read, straight from the response proto (no ``to_dict``).

        Returns ``x`` (float32, model feature order, NaN = null/missing), ``present`` (bool,
        Feast status PRESENT per cell) and ``event_s`` (per entity: the oldest event time of
        its feature views, NaN when Feast has none) and the model that must score ``x``.
        """
        import redis

        rows = [{"symbol": s, "timeframe": tf} for s, tf in entities]
        try:
            resp = self.client.store.get_online_features(
                features=self.feature_service, entity_rows=rows
            )
        except (redis.RedisError, ConnectionError, OSError) as e:
            raise Unavailable(f"online store (Redis) unavailable: {e}") from e
        proto = resp.proto
        pos = {n: i for i, n in enumerate(proto.metadata.feature_names.val)}
        model = self.model
        n, f = len(rows), len(model.features)
        x = np.full((n, f), np.nan, dtype=np.float32)
        present = np.zeros((n, f), dtype=bool)
        for j, name in enumerate(model.features):
            vec = proto.results[pos[name]]
            present[:, j] = np.fromiter(vec.statuses, dtype=np.int8, count=n) == 1  # PRESENT
            col = x[:, j]
            for i, v in enumerate(vec.values):
                kind = v.WhichOneof("val")
                if kind is not None and kind != "null_val":
                    col[i] = float(getattr(v, kind))
        # one event-time vector per feature view is enough (a view's features share it)
        event_s = np.full(n, np.inf)
        for j in self._view_heads:
            vec = proto.results[pos[model.features[j]]]
            ts = np.array(
                [
                    t.seconds + t.nanos / 1e9 if t.seconds > 0 else np.inf
                    for t in vec.event_timestamps
                ]
            )
            event_s = np.minimum(event_s, ts)
        event_s[np.isinf(event_s)] = np.nan
        return x, present, event_s, model

    def refusals(
        self,
        entities: list[tuple[str, str]],
        x: np.ndarray,
        present: np.ndarray,
        event_s: np.ndarray,
        model: LoadedModel,
        now: float,
        max_staleness: list[float | None],
    ) -> list[Refused | None]:
        """Vectorized checks; a :class:`Refused` (404 unknown, 409 not ready / stale) or None
        per entity. Messages are built only for refused entities."""
        unknown = ~present.any(axis=1) | np.isnan(event_s)
        bad = ~present | np.isnan(x)
        if "features_ready" in model.features:
            ready = x[:, model.features.index("features_ready")] == 1.0
        else:
            ready = np.ones(len(entities), dtype=bool)
        not_ready = bad.any(axis=1) | ~ready
        limits = np.array(
            [
                ms
                if ms is not None
                else timeframe_ms(tf) / 1000 + self.settings.serving_max_delay_s
                for (_, tf), ms in zip(entities, max_staleness, strict=True)
            ]
        )
        age = now - event_s
        stale = age > limits
        out: list[Refused | None] = []
        for i, (sym, tf) in enumerate(entities):
            if unknown[i]:
                out.append(
                    Refused(
                        404,
                        "unknown",
                        f"{sym}/{tf}: no online features (unknown symbol or timeframe, "
                        "or nothing written yet)",
                    )
                )
            elif not_ready[i]:
                nulls = [model.features[j] for j in np.flatnonzero(bad[i])]
                what = (
                    f"null {nulls[:8]}{'...' if len(nulls) > 8 else ''}"
                    if nulls
                    else "features_ready=false"
                )
                out.append(
                    Refused(
                        409,
                        "not_ready",
                        f"{sym}/{tf}: features not ready (warm-up or missing): {what}",
                    )
                )
            elif stale[i]:
                out.append(
                    Refused(
                        409,
                        "stale",
                        f"{sym}/{tf}: features are stale: event time "
                        f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(event_s[i]))} is "
                        f"{age[i]:,.0f} s old > {limits[i]:,.0f} s allowed",
                    )
                )
            else:
                out.append(None)
        return out

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
        x, present, event_s, model = self.online(entities)
        now = time.time() if now is None else now
        refused = self.refusals(
            entities, x, present, event_s, model, now, max_staleness or [None] * len(entities)
        )
        out: list[dict[str, Any] | Refused] = []
        ok = [i for i, r in enumerate(refused) if r is None]
        proba = np.asarray(model.booster.inplace_predict(x[ok])) if ok else None
        up, down = model.classes.index("up"), model.classes.index("down")
        k = 0
        for i, r in enumerate(refused):
            if r is not None:
                out.append(r)
                continue
            assert proba is not None
            p = proba[k]
            k += 1
            out.append(
                {
                    "symbol": entities[i][0],
                    "timeframe": entities[i][1],
                    "probabilities": {c: float(p[j]) for j, c in enumerate(model.classes)},
                    "signal": float(p[up] - p[down]),
                    "event_time": _iso(float(event_s[i])),
                    "staleness_s": round(float(now - event_s[i]), 3),
                }
            )
        return model, out

    # ------------------------------------------------------------ given features
    def model_for(self, tag: str | None) -> LoadedModel:
        """The served model (``tag`` empty) or another one from the store, feature-checked
        and cached (concrete tags only: ``name:latest`` is resolved on every call)."""
        if not tag:
            return self.model
        if tag.endswith(":latest") or ":" not in tag:
            tag = resolve_tag(tag if ":" in tag else f"{tag}:latest")
        model = self._models.get(tag)
        if model is None:
            model = self._checked(tag)
            with self._lock:
                if len(self._models) >= 32:
                    self._models.pop(next(iter(self._models)))
                self._models[tag] = model
        return model

    def score(self, items: list[ScoreItem]) -> list[dict[str, Any] | Refused]:
        """Probabilities for feature vectors given by the caller (the strategy job sends the
        rows of its `features` stream, so a replay never races the online store).

        Per item: 404 ``unknown_model``, 409 ``feature_mismatch`` (model trained on other
        features), 400 ``missing_features`` (a model feature absent from the item), 409
        ``not_ready`` (null/NaN feature or ``features_ready`` false) and 409 ``lookahead``
        (the bar is not after every label the model was trained on: walk-forward guard).
        """
        out: list[dict[str, Any] | Refused | None] = [None] * len(items)
        groups: dict[str, list[int]] = {}
        for i, it in enumerate(items):
            groups.setdefault(it.model or "", []).append(i)
        for tag, idx in groups.items():
            try:
                model = self.model_for(tag)
            except ModelNotFound as e:
                for i in idx:
                    out[i] = Refused(404, "unknown_model", str(e))
                continue
            except ValueError as e:  # a tag BentoML cannot parse
                for i in idx:
                    out[i] = Refused(422, "bad_model_tag", str(e))
                continue
            except FeatureMismatch as e:
                for i in idx:
                    out[i] = Refused(409, "feature_mismatch", str(e))
                continue
            horizon_end = knowledge_end_ms(model)
            x = np.full((len(idx), len(model.features)), np.nan, dtype=np.float32)
            ok: list[int] = []
            for k, i in enumerate(idx):
                it = items[i]
                where = f"{it.symbol}/{it.timeframe}@{it.bar_end_ms}"
                missing = [f for f in model.features if f not in it.features]
                if missing:
                    out[i] = Refused(
                        400,
                        "missing_features",
                        f"{where}: {len(missing)} model features missing: {missing[:8]}",
                    )
                    continue
                row = [it.features[f] for f in model.features]
                x[k] = [np.nan if v is None else v for v in row]
                nulls = [f for f, v in zip(model.features, x[k], strict=True) if np.isnan(v)]
                if nulls or (
                    "features_ready" in model.features
                    and x[k, model.features.index("features_ready")] != 1.0
                ):
                    out[i] = Refused(
                        409,
                        "not_ready",
                        f"{where}: features not ready: "
                        + (f"null {nulls[:8]}" if nulls else "features_ready=false"),
                    )
                    continue
                if horizon_end is not None and it.bar_end_ms < horizon_end:
                    out[i] = Refused(
                        409,
                        "lookahead",
                        f"{where}: model {model.tag} was trained on labels up to "
                        f"{_iso(horizon_end / 1000)}; scoring an earlier bar would use the "
                        "future (walk-forward: use a model trained before this bar)",
                    )
                    continue
                ok.append(k)
            if not ok:
                continue
            proba = np.asarray(model.booster.inplace_predict(x[ok]))
            up, down = model.classes.index("up"), model.classes.index("down")
            for p, k in zip(proba, ok, strict=True):
                it = items[idx[k]]
                out[idx[k]] = {
                    "symbol": it.symbol,
                    "timeframe": it.timeframe,
                    "bar_end_ms": it.bar_end_ms,
                    "model_tag": model.tag,
                    "probabilities": {c: float(p[j]) for j, c in enumerate(model.classes)},
                    "signal": float(p[up] - p[down]),
                }
        return [r for r in out if r is not None]

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
