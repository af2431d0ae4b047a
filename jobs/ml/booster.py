"""The XGBoost side of training: the hyper-parameters (:class:`TrainConfig`) and one fit.

:class:`TrainConfig` holds the label, the walk-forward scheme (``folds``, ``expanding`` or
``rolling`` with ``window_blocks``) and the booster's parameters; :meth:`TrainConfig.params`
is the ``xgb.train`` parameter dict (``multi:softprob`` over the three classes, hist trees).
:func:`fit_booster` trains one booster on a feature matrix, with early stopping on a
validation set when given one, reporting each boosting round to a callback.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from jobs.ml.dataset import CLASSES
from udfs.model_features import FEATURES


@dataclass
class TrainConfig:
    label: str = "fwd_ret_5"
    folds: int = 5
    scheme: str = "expanding"  # or "rolling": train on the last `window_blocks` blocks only
    window_blocks: int = 2
    rounds: int = 400
    early_stopping: int = 30
    max_depth: int = 4
    eta: float = 0.05
    subsample: float = 0.8
    colsample_bytree: float = 0.8
    min_child_weight: float = 20.0
    nthread: int = 0  # 0 = all cores
    seed: int = 0

    def params(self) -> dict[str, Any]:
        return {
            "objective": "multi:softprob",
            "num_class": len(CLASSES),
            "eval_metric": "mlogloss",
            "tree_method": "hist",
            "max_depth": self.max_depth,
            "eta": self.eta,
            "subsample": self.subsample,
            "colsample_bytree": self.colsample_bytree,
            "min_child_weight": self.min_child_weight,
            "nthread": self.nthread,
            "seed": self.seed,
        }


def fit_booster(
    cfg: TrainConfig,
    x: np.ndarray,
    y: np.ndarray,
    rounds: int,
    val: tuple[np.ndarray, np.ndarray] | None,
    on_round: Callable[[int], None] | None,
) -> Any:
    """``xgb.train`` on ``x``/``y`` for up to ``rounds`` rounds (early stopping on ``val``)."""
    import xgboost as xgb

    class _Progress(xgb.callback.TrainingCallback):
        def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
            if on_round:
                on_round(epoch + 1)
            return False

    dtrain = xgb.DMatrix(x, label=y, feature_names=list(FEATURES))
    evals = []
    if val is not None:
        evals = [(xgb.DMatrix(val[0], label=val[1], feature_names=list(FEATURES)), "val")]
    return xgb.train(
        cfg.params(),
        dtrain,
        num_boost_round=rounds,
        evals=evals,
        early_stopping_rounds=cfg.early_stopping if val is not None else None,
        verbose_eval=False,
        callbacks=[_Progress()],
    )
