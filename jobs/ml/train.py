"""Walk-forward XGBoost training on a Feast training set (``jobs/ml/dataset.py`` output).

- **Inputs**: the ``model_v1`` feature service's features in its order (:data:`FEATURES`);
  rows that are not warm (``features_ready`` false) are dropped. **Target**: the 3-class
  label ``fwd_ret_N_class`` (``down``/``flat``/``up``, :data:`CLASSES` order), objective
  ``multi:softprob``.
- **Walk-forward, expanding** (default) **or rolling**: the bar times are cut into
  ``folds + 1`` equal blocks; fold k tests on block ``k`` and trains on blocks ``0..k-1``
  (expanding) or on the ``window_blocks`` blocks before it (rolling). Labels look ``N``
  bars ahead, so training rows whose label window reaches into the test block are purged (embargo of
  ``N`` bars). Inside a fold the last 15 % of the training time (again purged) is the early
  stopping set; the final model is trained on every row with the median best round count.
- **Metrics** per fold (:func:`metrics`): multi-class log loss, accuracy (argmax), AUC as
  the macro average of one-vs-rest AUCs over the three classes (``auc_ovr``) and the binary
  ``up`` vs not-``up`` AUC (``auc_up``); and the trading metric: the signal is
  ``p(up) - p(down)``, the top decile by ``|signal|`` is traded in its sign, ``hit_rate`` is
  the share of those whose forward return has that sign, ``mean_ret_bps`` their mean
  signed forward return.
- **Baselines** on the same folds: ``always_flat`` (predicts ``flat``; probabilities =
  the training fold's class frequencies; no signal) and ``momentum`` (signal = the past
  return ``logret_N`` (or ``logret_5``), probabilities = the training fold's class
  frequencies given the sign of that return).

The booster goes to the BentoML model store (``bentoml.xgboost.save_model``) with metadata
(features in order, feature service, training window, metrics, library versions); a
report (JSON + markdown) and PNG plots go to ``reports_dir/<model tag>/``.

This module is the driver (:func:`train`, the walk-forward loop); the parts live beside it:
``training_set.py`` (rows, feature matrix), ``splits.py`` (folds, embargo), ``booster.py``
(:class:`TrainConfig`, one XGBoost fit), ``evaluation.py`` (metrics, baselines),
``artefact.py`` (metadata, BentoML save) and ``train_report.py`` (report and plots).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from infra.feature_store import ENTITY_TS, SERVICE
from infra.settings import Settings
from jobs.ml.artefact import iso, jsonable, model_metadata, no_none, save_booster
from jobs.ml.booster import TrainConfig, fit_booster
from jobs.ml.dataset import CLASSES, parse_labels
from jobs.ml.evaluation import baselines, mean_metrics, metrics, model_signal
from jobs.ml.splits import embargo, inner_split, walk_forward_splits
from jobs.ml.train_report import write_report
from jobs.ml.training_set import class_index, load_training_set, matrix
from udfs.model_features import FEATURES

__all__ = ["Progress", "TrainConfig", "TrainResult", "train"]

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]


@dataclass
class TrainResult:
    tag: str | None
    report_dir: Path
    report: dict[str, Any]
    booster: Any = field(repr=False)


def train(
    settings: Settings,
    dataset: Path,
    cfg: TrainConfig,
    *,
    save: bool = True,
    model_name: str | None = None,
    reports_dir: Path | None = None,
    on_progress: Progress | None = None,
) -> TrainResult:
    """Walk-forward validation, then the final model on all rows; save, report, plot."""
    t0 = time.monotonic()
    horizon = parse_labels([cfg.label])[0]
    cls, ret = f"fwd_ret_{horizon}_class", f"fwd_ret_{horizon}"
    momentum_col = f"logret_{horizon}" if f"logret_{horizon}" in FEATURES else "logret_5"
    df = load_training_set(dataset, cfg.label)
    gap = embargo(df, horizon)
    splits = walk_forward_splits(df[ENTITY_TS], cfg.folds, gap, cfg.scheme, cfg.window_blocks)
    x_all, y_all = matrix(df), class_index(df[cls])
    folds, best_rounds, oos_proba = cross_validate(
        df,
        cfg,
        splits,
        x_all,
        y_all,
        gap=gap,
        cls=cls,
        ret=ret,
        momentum_col=momentum_col,
        on_progress=on_progress,
    )

    final_rounds = max(1, int(np.median(best_rounds)))

    def tick_final(n: int) -> None:
        if on_progress:
            on_progress("final model", n, final_rounds)

    booster = fit_booster(cfg, x_all, y_all, final_rounds, None, tick_final)
    importance = booster.get_score(importance_type="gain")
    summary = {
        name: mean_metrics([f[name] for f in folds])
        for name in ("model", "always_flat", "momentum")
    }
    meta = model_metadata(
        df,
        cfg,
        cls=cls,
        horizon=horizon,
        gap=gap,
        rounds=final_rounds,
        summary=summary,
        dataset=dataset,
    )
    tag = _save(model_name or settings.model_name, booster, cls, meta) if save else None
    out_dir = (reports_dir or settings.reports_home) / (
        (tag or f"unsaved-{int(time.time())}").replace(":", "-")
    )
    report = {
        "model_tag": tag,
        **meta,
        "config": asdict(cfg),
        "folds": folds,
        "feature_importance_gain": dict(sorted(importance.items(), key=lambda kv: -kv[1])),
        "seconds": round(time.monotonic() - t0, 2),
    }
    write_report(out_dir, report, df[cls], oos_proba, class_index(df[cls]))
    return TrainResult(tag, out_dir, report, booster)


def _save(name: str, booster: Any, cls: str, meta: dict[str, Any]) -> str:
    """The booster -> the BentoML model store, with its metadata; returns its tag."""
    bento_model = save_booster(
        name,
        booster,
        labels={"feature_service": SERVICE, "label": cls},
        metadata=no_none(jsonable(meta)),
    )
    tag = str(bento_model.tag)
    log.info("saved %s to the BentoML model store", tag)
    return tag


def cross_validate(
    df: pd.DataFrame,
    cfg: TrainConfig,
    splits: list[tuple[np.ndarray, np.ndarray]],
    x_all: np.ndarray,
    y_all: np.ndarray,
    *,
    gap: pd.Timedelta,
    cls: str,
    ret: str,
    momentum_col: str,
    on_progress: Progress | None = None,
) -> tuple[list[dict[str, Any]], list[int], np.ndarray]:
    """The walk-forward folds: per fold its report (model and baselines on the test block),
    its best round count, and the out-of-sample probabilities of every row (NaN where no
    fold tests it)."""
    ts = df[ENTITY_TS]
    folds: list[dict[str, Any]] = []
    best_rounds: list[int] = []
    oos_proba = np.full((len(df), len(CLASSES)), np.nan)
    for k, (tr, te) in enumerate(splits, start=1):
        fit, val = inner_split(ts, tr, gap)
        if on_progress:
            on_progress(f"fold {k}/{len(splits)}", 0, cfg.rounds)

        def tick(n: int, k: int = k) -> None:
            if on_progress:
                on_progress(f"fold {k}/{len(splits)}", n, cfg.rounds)

        val_set = (x_all[val], y_all[val])
        booster = fit_booster(cfg, x_all[fit], y_all[fit], cfg.rounds, val_set, tick)
        best = int(booster.best_iteration) + 1
        best_rounds.append(best)
        proba = booster.inplace_predict(x_all[te], iteration_range=(0, best))
        oos_proba[te] = proba
        r = df[ret].to_numpy(np.float64)[te]
        fold: dict[str, Any] = {
            "fold": k,
            "train_rows": len(tr),
            "test_rows": len(te),
            "train_start": iso(ts.iloc[tr[0]]),
            "train_end": iso(ts.iloc[tr[-1]]),
            "test_start": iso(ts.iloc[te[0]]),
            "test_end": iso(ts.iloc[te[-1]]),
            "best_rounds": best,
            "model": metrics(y_all[te], proba, r, model_signal(proba), proba.argmax(axis=1)),
            **baselines(df.iloc[tr], df.iloc[te], cls, ret, momentum_col),
        }
        folds.append(fold)
        log.info(
            "fold %d: log loss %.4f (flat %.4f, momentum %.4f), hit rate %s",
            k,
            fold["model"]["log_loss"],
            fold["always_flat"]["log_loss"],
            fold["momentum"]["log_loss"],
            fold["model"]["hit_rate"],
        )
    return folds, best_rounds, oos_proba
