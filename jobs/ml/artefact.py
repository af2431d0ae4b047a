"""The trained model as an artefact: its metadata and its save to the BentoML model store.

:func:`model_metadata` is what travels with the booster (and heads the training report):
the features in order, the feature service and views, the feature-set hash, classes and
label, the training window (bentos/predictor refuses bars it reaches), rows, symbols, class
balance, rounds, parameters, walk-forward scheme, fold-mean metrics and library
:func:`versions`. :func:`save_booster` is ``bentoml.xgboost.save_model`` made to work with
the ``xgboost-cpu`` distribution; :func:`no_none` strips what BentoML metadata cannot hold.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import pandas as pd

from infra.feature_store import ENTITY_TS, SERVICE
from jobs.ml.booster import TrainConfig
from jobs.ml.dataset import CLASSES
from jobs.ml.training_set import FEATURE_VIEWS, feature_set_hash
from udfs.model_features import FEATURES


def versions() -> dict[str, str]:
    out = {}
    for dist in ("xgboost-cpu", "feast", "bentoml", "ta-lib", "numpy", "pandas"):
        try:
            out[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def model_metadata(
    df: pd.DataFrame,
    cfg: TrainConfig,
    *,
    cls: str,
    horizon: int,
    gap: pd.Timedelta,
    rounds: int,
    summary: dict[str, dict[str, float | None]],
    dataset: Path,
) -> dict[str, Any]:
    """The model's metadata: what it reads, what it was trained on and how, how it scored."""
    ts = df[ENTITY_TS]
    counts = df[cls].value_counts()
    return {
        "features": list(FEATURES),
        "feature_service": SERVICE,
        "feature_views": FEATURE_VIEWS,
        "feature_set_hash": feature_set_hash(FEATURES),
        "classes": list(CLASSES),
        "label": cls,
        "horizon_bars": horizon,
        "objective": "multi:softprob",
        "signal": "p(up) - p(down)",
        "training_start": iso(ts.iloc[0]),
        "training_end": iso(ts.iloc[-1]),
        "rows": len(df),
        "symbols": sorted(df["symbol"].unique().tolist()),
        "timeframes": sorted(df["timeframe"].unique().tolist()),
        "class_balance": {c: int(counts.get(c, 0)) for c in CLASSES},
        "rounds": rounds,
        "params": cfg.params(),
        "walk_forward": {
            "folds": cfg.folds,
            "scheme": cfg.scheme,
            **({"window_blocks": cfg.window_blocks} if cfg.scheme == "rolling" else {}),
            "embargo": str(gap),
        },
        "metrics": summary,
        "versions": versions(),
        "dataset": str(dataset),
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def save_booster(name: str, booster: Any, **kwargs: Any) -> Any:
    """``bentoml.xgboost.save_model``, working with the ``xgboost-cpu`` distribution.

    BentoML records ``importlib.metadata.version("xgboost")``, which fails when xgboost
    was installed as ``xgboost-cpu`` (same module, other distribution name): its lookup
    is pointed at ``xgboost.__version__`` for that one name.
    """
    import bentoml
    import xgboost
    from _bentoml_impl.frameworks import xgboost as framework

    lookup = framework.get_pkg_version
    if not getattr(lookup, "_candleflow", False):

        def version(pkg: str) -> str:
            return str(xgboost.__version__) if pkg == "xgboost" else str(lookup(pkg))

        version._candleflow = True  # type: ignore[attr-defined]
        framework.get_pkg_version = version
    return bentoml.xgboost.save_model(name, booster, **kwargs)


def iso(ts: Any) -> str:
    return pd.Timestamp(ts).isoformat()


def jsonable(obj: Any) -> Any:
    """Round-trip through JSON (no numpy scalars, None -> kept)."""
    return json.loads(json.dumps(obj, default=str))


def no_none(obj: Any) -> Any:
    """BentoML metadata cannot hold None: drop such keys (e.g. the flat baseline's hit rate)."""
    if isinstance(obj, dict):
        return {k: no_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [no_none(v) for v in obj]
    return obj
