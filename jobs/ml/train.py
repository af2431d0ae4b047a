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
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from infra.feature_store import (
    CANDLES_VIEW,
    ENTITY_KEYS,
    ENTITY_TS,
    INDICATORS_VIEW,
    SERVICE,
)
from infra.settings import Settings
from jobs.ml.dataset import CLASSES, parse_labels, timeframe_ms
from udfs.model_features import CANDLE_FEATURES, FEATURES, INDICATOR_FEATURES

log = logging.getLogger(__name__)

# the model's features (udfs/model_features.py), grouped by the Feast view that holds them
FEATURE_VIEWS: dict[str, list[str]] = {
    CANDLES_VIEW: list(CANDLE_FEATURES),
    INDICATORS_VIEW: list(INDICATOR_FEATURES),
}
VALIDATION_FRAC = 0.15
TOP_FRACTION = 0.10
Progress = Callable[[str, int, int], None]


def feature_set_hash(features: tuple[str, ...] | list[str]) -> str:
    """A short, order-sensitive fingerprint of a feature list."""
    return hashlib.sha256("\n".join(features).encode()).hexdigest()[:16]


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


@dataclass
class TrainResult:
    tag: str | None
    report_dir: Path
    report: dict[str, Any]
    booster: Any = field(repr=False)


# ------------------------------------------------------------------------------ data
def load_training_set(path: Path, label: str) -> pd.DataFrame:
    """The dataset's warm rows, sorted by bar time, with the columns training needs."""
    df = pd.read_parquet(path)
    horizon = parse_labels([label])[0]
    cls = f"fwd_ret_{horizon}_class"
    needed = [*ENTITY_KEYS, ENTITY_TS, *FEATURES, f"fwd_ret_{horizon}", cls]
    missing = [c for c in needed if c not in df]
    if missing:
        raise ValueError(f"{path}: columns missing: {missing} (build it with fwd_ret_{horizon})")
    df = df.loc[df["features_ready"].fillna(False).astype(bool)]
    df = df.loc[df[cls].isin(CLASSES)]
    df = df.sort_values([ENTITY_TS, *ENTITY_KEYS], kind="stable").reset_index(drop=True)
    if df.empty:
        raise ValueError(f"{path}: no warm rows with a known {cls}")
    return df


def matrix(df: pd.DataFrame, features: tuple[str, ...] | list[str] = FEATURES) -> np.ndarray:
    """Feature matrix (float32, NaN for missing) in model order."""
    return df.loc[:, list(features)].astype(np.float64).to_numpy(np.float32)


def class_index(labels: pd.Series) -> np.ndarray:
    return labels.map({c: i for i, c in enumerate(CLASSES)}).to_numpy(np.int64)


def embargo(df: pd.DataFrame, horizon: int) -> pd.Timedelta:
    """How far a label looks ahead: N bars of the longest timeframe in the data."""
    step = max(timeframe_ms(tf) for tf in df["timeframe"].unique())
    return pd.Timedelta(milliseconds=horizon * step)


def walk_forward_splits(
    ts: pd.Series,
    folds: int,
    gap: pd.Timedelta,
    scheme: str = "expanding",
    window_blocks: int = 1,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Walk-forward splits over ``folds + 1`` equal time blocks; fold k tests on block k.

    ``expanding``: train on all times before block k (minus ``gap``); ``rolling``: only on
    the ``window_blocks`` blocks before k (minus ``gap`` at the end), so old regimes age out.
    """
    if folds < 1:
        raise ValueError("folds must be >= 1")
    if scheme not in ("expanding", "rolling"):
        raise ValueError(f"scheme must be expanding or rolling, not {scheme!r}")
    if window_blocks < 1:
        raise ValueError("window_blocks must be >= 1")
    values = _naive(ts)
    times = np.unique(values)
    if len(times) < folds + 1:
        raise ValueError(f"{len(times)} distinct bar times: too few for {folds} folds")
    bounds = [times[i * len(times) // (folds + 1)] for i in range(folds + 1)]
    bounds.append(times[-1] + np.timedelta64(1, "ms"))
    splits = []
    for k in range(1, folds + 1):
        lo, hi = bounds[k], bounds[k + 1]
        start = bounds[max(0, k - window_blocks)] if scheme == "rolling" else values.min()
        train = np.flatnonzero((values >= start) & (values < lo - gap.to_timedelta64()))
        test = np.flatnonzero((values >= lo) & (values < hi))
        if len(train) == 0 or len(test) == 0:
            raise ValueError(f"fold {k}: empty train or test set (too little data)")
        splits.append((train, test))
    return splits


def _naive(ts: pd.Series) -> np.ndarray:
    """UTC datetime64[ns] values (a tz-aware Series' to_numpy() gives objects)."""
    s = pd.to_datetime(ts, utc=True).dt.tz_convert(None)
    return s.to_numpy(dtype="datetime64[ns]")


def inner_split(ts: pd.Series, idx: np.ndarray, gap: pd.Timedelta) -> tuple[np.ndarray, np.ndarray]:
    """Early-stopping split of training rows: the last 15 % of their time, purged."""
    t = _naive(ts)[idx]
    lo, hi = t.min(), t.max()
    cut = lo + (hi - lo) * (1 - VALIDATION_FRAC)
    fit = idx[t < cut - gap.to_timedelta64()]
    val = idx[t >= cut]
    if len(fit) == 0 or len(val) == 0:
        return idx, idx[-max(1, len(idx) // 10) :]
    return fit, val


# --------------------------------------------------------------------------- metrics
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


# --------------------------------------------------------------------------- training
def _booster(
    cfg: TrainConfig,
    x: np.ndarray,
    y: np.ndarray,
    rounds: int,
    val: tuple[np.ndarray, np.ndarray] | None,
    on_round: Callable[[int], None] | None,
) -> Any:
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


def versions() -> dict[str, str]:
    out = {}
    for dist in ("xgboost-cpu", "feast", "bentoml", "ta-lib", "numpy", "pandas"):
        try:
            out[dist] = importlib_metadata.version(dist)
        except importlib_metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


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
    ts = df[ENTITY_TS]
    splits = walk_forward_splits(ts, cfg.folds, gap, cfg.scheme, cfg.window_blocks)
    x_all, y_all = matrix(df), class_index(df[cls])

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

        booster = _booster(cfg, x_all[fit], y_all[fit], cfg.rounds, (x_all[val], y_all[val]), tick)
        best = int(booster.best_iteration) + 1
        best_rounds.append(best)
        proba = booster.inplace_predict(x_all[te], iteration_range=(0, best))
        oos_proba[te] = proba
        r = df[ret].to_numpy(np.float64)[te]
        fold: dict[str, Any] = {
            "fold": k,
            "train_rows": len(tr),
            "test_rows": len(te),
            "train_start": _iso(ts.iloc[tr[0]]),
            "train_end": _iso(ts.iloc[tr[-1]]),
            "test_start": _iso(ts.iloc[te[0]]),
            "test_end": _iso(ts.iloc[te[-1]]),
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

    final_rounds = max(1, int(np.median(best_rounds)))

    def tick_final(n: int) -> None:
        if on_progress:
            on_progress("final model", n, final_rounds)

    booster = _booster(cfg, x_all, y_all, final_rounds, None, tick_final)
    importance = booster.get_score(importance_type="gain")
    summary = {
        name: _mean_metrics([f[name] for f in folds])
        for name in ("model", "always_flat", "momentum")
    }
    counts = df[cls].value_counts()
    meta: dict[str, Any] = {
        "features": list(FEATURES),
        "feature_service": SERVICE,
        "feature_views": FEATURE_VIEWS,
        "feature_set_hash": feature_set_hash(FEATURES),
        "classes": list(CLASSES),
        "label": cls,
        "horizon_bars": horizon,
        "objective": "multi:softprob",
        "signal": "p(up) - p(down)",
        "training_start": _iso(ts.iloc[0]),
        "training_end": _iso(ts.iloc[-1]),
        "rows": len(df),
        "symbols": sorted(df["symbol"].unique().tolist()),
        "timeframes": sorted(df["timeframe"].unique().tolist()),
        "class_balance": {c: int(counts.get(c, 0)) for c in CLASSES},
        "rounds": final_rounds,
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
    tag = None
    if save:
        name = model_name or settings.model_name
        bento_model = save_booster(
            name,
            booster,
            labels={"feature_service": SERVICE, "label": cls},
            metadata=_no_none(_jsonable(meta)),
        )
        tag = str(bento_model.tag)
        log.info("saved %s to the BentoML model store", tag)
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


def _mean_metrics(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    keys = ("log_loss", "accuracy", "auc_ovr", "auc_up", "hit_rate", "mean_ret_bps")
    out: dict[str, float | None] = {}
    for key in keys:
        vals = [r[key] for r in rows if r.get(key) is not None]
        out[key] = float(np.mean(vals)) if vals else None
    return out


def _iso(ts: Any) -> str:
    return pd.Timestamp(ts).isoformat()


def _jsonable(obj: Any) -> Any:
    """Round-trip through JSON (no numpy scalars, None -> kept)."""
    return json.loads(json.dumps(obj, default=str))


def _no_none(obj: Any) -> Any:
    """BentoML metadata cannot hold None: drop such keys (e.g. the flat baseline's hit rate)."""
    if isinstance(obj, dict):
        return {k: _no_none(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, list):
        return [_no_none(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------- report
def write_report(
    out_dir: Path, report: dict[str, Any], labels: pd.Series, proba: np.ndarray, y: np.ndarray
) -> None:
    """report.json, report.md and three PNGs (importance, calibration, per-fold)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(_jsonable(report), indent=2) + "\n")

    # feature importance (gain), top 20
    imp = list(report["feature_importance_gain"].items())[:20][::-1]
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.barh([k for k, _ in imp], [v for _, v in imp], color="tab:blue")
    ax.set_xlabel("gain")
    ax.set_title("XGBoost feature importance (gain), top 20")
    fig.tight_layout()
    fig.savefig(out_dir / "feature_importance.png", dpi=100)
    plt.close(fig)

    # calibration of the out-of-sample (walk-forward test) probabilities, per class
    fig, ax = plt.subplots(figsize=(6, 6))
    seen = ~np.isnan(proba[:, 0])
    for i, c in enumerate(CLASSES):
        p, hit = proba[seen, i], (y[seen] == i)
        if len(p) == 0:
            continue
        edges = np.quantile(p, np.linspace(0, 1, 11))
        b = np.clip(np.searchsorted(edges, p, side="right") - 1, 0, 9)
        mp = [p[b == j].mean() for j in range(10) if np.any(b == j)]
        mh = [hit[b == j].mean() for j in range(10) if np.any(b == j)]
        ax.plot(mp, mh, marker="o", label=c)
    ax.plot([0, 1], [0, 1], "k--", lw=1)
    ax.set_xlabel("predicted probability (decile mean)")
    ax.set_ylabel("observed frequency")
    ax.set_title("calibration, walk-forward test folds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / "calibration.png", dpi=100)
    plt.close(fig)

    # per-fold metrics, model vs baselines
    folds = report["folds"]
    ks = [f["fold"] for f in folds]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    # a marker and line style per predictor: two baselines that score the same stay visible
    styles = {"model": ("o", "-", 7), "always_flat": ("s", "--", 10), "momentum": ("^", ":", 6)}
    for ax, key, title, ylabel in zip(
        axes,
        ("log_loss", "auc_ovr", "hit_rate"),
        ("log loss (lower is better)", "AUC one-vs-rest (macro)", "top-decile hit rate"),
        ("log loss", "AUC", "hit rate"),
        strict=True,
    ):
        for name, (marker, line, size) in styles.items():
            vals = [f[name][key] if f[name][key] is not None else np.nan for f in folds]
            ax.plot(
                ks, vals, marker=marker, linestyle=line, markersize=size, label=name,
                markerfacecolor="none" if name != "model" else None,
            )  # fmt: skip
        ax.set_title(title)
        ax.set_xlabel("fold")
        ax.set_ylabel(ylabel)
        ax.set_xticks(ks)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(out_dir / "folds.png", dpi=100)
    plt.close(fig)

    (out_dir / "report.md").write_text(markdown(report))


def _fmt(v: Any, digits: int = 4) -> str:
    return "-" if v is None else f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def markdown(report: dict[str, Any]) -> str:
    m = report["metrics"]
    lines = [
        f"# Training report: {report['model_tag'] or '(not saved)'}",
        "",
        f"- label: `{report['label']}` ({report['horizon_bars']} bars ahead), classes "
        f"{', '.join(report['classes'])}; balance {report['class_balance']}",
        f"- rows: {report['rows']:,} warm bars, {', '.join(report['symbols'])} "
        f"({', '.join(report['timeframes'])}), {report['training_start']} .. "
        f"{report['training_end']}",
        f"- features: {len(report['features'])} of feature service `{report['feature_service']}` "
        f"(hash {report['feature_set_hash']})",
        f"- walk-forward: {report['walk_forward']['folds']} folds, expanding, embargo "
        f"{report['walk_forward']['embargo']}; final model {report['rounds']} rounds",
        f"- versions: {report['versions']}",
        "",
        "## Mean over folds",
        "",
        "| predictor | log loss | accuracy | AUC (OvR macro) | AUC up vs not | "
        "top-decile hit rate | mean ret (bps) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in ("model", "always_flat", "momentum"):
        r = m[name]
        lines.append(
            f"| {name} | {_fmt(r['log_loss'])} | {_fmt(r['accuracy'])} | {_fmt(r['auc_ovr'])} "
            f"| {_fmt(r['auc_up'])} | {_fmt(r['hit_rate'])} | {_fmt(r['mean_ret_bps'], 2)} |"
        )
    lines += [
        "",
        "## Folds",
        "",
        "| fold | train rows | test | rounds | log loss (model / flat / mom.) | AUC OvR | "
        "hit rate (model / mom.) |",
        "|---:|---:|---|---:|---|---:|---|",
    ]
    for f in report["folds"]:
        lines.append(
            f"| {f['fold']} | {f['train_rows']:,} | {f['test_start'][:16]} .. "
            f"{f['test_end'][:16]} ({f['test_rows']:,}) | {f['best_rounds']} | "
            f"{_fmt(f['model']['log_loss'])} / {_fmt(f['always_flat']['log_loss'])} / "
            f"{_fmt(f['momentum']['log_loss'])} | {_fmt(f['model']['auc_ovr'])} | "
            f"{_fmt(f['model']['hit_rate'])} / {_fmt(f['momentum']['hit_rate'])} |"
        )
    lines += [
        "",
        "![importance](feature_importance.png) ![calibration](calibration.png)",
        "",
        "![folds](folds.png)",
        "",
    ]
    return "\n".join(lines)
