"""Evaluation of class probabilities on a walk-forward test fold, and the baselines.

:func:`metrics`: multi-class log loss, accuracy (argmax), AUC as the macro average of the
one-vs-rest AUCs over the three classes (``auc_ovr``) and the binary ``up`` vs not-``up`` AUC
(``auc_up``); and the trading metric (:func:`top_signals`): the top :data:`TOP_FRACTION` by
``|signal|`` traded in its sign, their hit rate and mean signed forward return. The model's
signal is ``p(up) - p(down)`` (:func:`model_signal`). :func:`baselines` scores
``always_flat`` and ``momentum`` on the same fold; :func:`mean_metrics` averages folds.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from jobs.ml.dataset import CLASSES
from jobs.ml.training_set import class_index

TOP_FRACTION = 0.10


def auc(y: np.ndarray, score: np.ndarray) -> float | None:
    """Binary ROC AUC by the rank-sum (Mann-Whitney) formula, ties averaged."""
    y = y.astype(bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return None
    ranks = pd.Series(score).rank(method="average").to_numpy()
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def log_loss(y: np.ndarray, proba: np.ndarray) -> float:
    p = np.clip(proba[np.arange(len(y)), y], 1e-15, 1.0)
    return float(-np.mean(np.log(p)))


def top_signals(signal: np.ndarray | None, ret: np.ndarray) -> dict[str, float | int | None]:
    """Hit rate / mean signed return of the top decile of ``|signal|`` traded in its sign."""
    if signal is None or not np.any(signal != 0):
        return {"hit_rate": None, "mean_ret_bps": None, "signals": 0}
    k = max(1, int(np.ceil(len(signal) * TOP_FRACTION)))
    top = np.argsort(-np.abs(signal), kind="stable")[:k]
    top = top[signal[top] != 0]
    side = np.sign(signal[top])
    signed = side * ret[top]
    return {
        "hit_rate": float(np.mean(signed > 0)),
        "mean_ret_bps": float(np.mean(signed) * 1e4),
        "signals": len(top),
    }


def metrics(
    y: np.ndarray, proba: np.ndarray, ret: np.ndarray, signal: np.ndarray | None, pred: np.ndarray
) -> dict[str, Any]:
    aucs = [auc(y == i, proba[:, i]) for i in range(len(CLASSES))]
    known = [a for a in aucs if a is not None]
    up = CLASSES.index("up")
    return {
        "rows": len(y),
        "log_loss": log_loss(y, proba),
        "accuracy": float(np.mean(pred == y)),
        "auc_ovr": float(np.mean(known)) if known else None,
        "auc_up": auc(y == up, proba[:, up]),
        **top_signals(signal, ret),
    }


def model_signal(proba: np.ndarray) -> np.ndarray:
    return np.asarray(proba[:, CLASSES.index("up")] - proba[:, CLASSES.index("down")])


def baselines(
    train: pd.DataFrame, test: pd.DataFrame, cls: str, ret: str, momentum_col: str
) -> dict[str, dict[str, Any]]:
    y_tr, y_te = class_index(train[cls]), class_index(test[cls])
    r = test[ret].to_numpy(np.float64)
    prior = np.bincount(y_tr, minlength=len(CLASSES)) / len(y_tr)
    flat = np.full(len(y_te), CLASSES.index("flat"))
    out = {"always_flat": metrics(y_te, np.tile(prior, (len(y_te), 1)), r, None, flat)}
    # momentum: class frequencies given the sign of the past return (training fold)
    s_tr = np.sign(train[momentum_col].to_numpy(np.float64))
    s_te = np.sign(test[momentum_col].fillna(0).to_numpy(np.float64))
    cond = {}
    for s in (-1.0, 0.0, 1.0):
        counts = np.bincount(y_tr[s_tr == s], minlength=len(CLASSES)) + 1.0  # Laplace
        cond[s] = counts / counts.sum()
    proba = np.stack([cond[s] for s in s_te]) if len(s_te) else np.zeros((0, len(CLASSES)))
    pred = np.where(s_te > 0, CLASSES.index("up"), np.where(s_te < 0, CLASSES.index("down"), 1))
    past = test[momentum_col].fillna(0).to_numpy(np.float64)
    out["momentum"] = metrics(y_te, proba, r, past, pred)
    return out


def mean_metrics(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """Per-key mean over folds, undefined values (None) left out."""
    keys = ("log_loss", "accuracy", "auc_ovr", "auc_up", "hit_rate", "mean_ret_bps")
    out: dict[str, float | None] = {}
    for key in keys:
        vals = [r[key] for r in rows if r.get(key) is not None]
        out[key] = float(np.mean(vals)) if vals else None
    return out
