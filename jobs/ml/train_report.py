"""The training report: ``report.json``, ``report.md`` and three PNG plots per trained model.

:func:`write_report` writes them to the model's report folder (``reports_dir/<model tag>/``):
the report as JSON, the XGBoost gain importance of the top 20 features
(``feature_importance.png``), the calibration of the out-of-sample walk-forward
probabilities per class in deciles (``calibration.png``), the per-fold log loss, AUC and
top-decile hit rate of the model against the baselines (``folds.png``), and
:func:`markdown`, the human-readable summary that embeds them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jobs.ml.artefact import jsonable
from jobs.ml.dataset import CLASSES


def write_report(
    out_dir: Path, report: dict[str, Any], labels: pd.Series, proba: np.ndarray, y: np.ndarray
) -> None:
    """report.json, report.md and three PNGs (importance, calibration, per-fold)."""
    import matplotlib

    matplotlib.use("Agg")

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(jsonable(report), indent=2) + "\n")
    plot_importance(out_dir / "feature_importance.png", report["feature_importance_gain"])
    plot_calibration(out_dir / "calibration.png", proba, y)
    plot_folds(out_dir / "folds.png", report["folds"])
    (out_dir / "report.md").write_text(markdown(report))


def plot_importance(path: Path, gain: dict[str, float]) -> None:
    """Feature importance (gain), top 20."""
    import matplotlib.pyplot as plt

    imp = list(gain.items())[:20][::-1]
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.barh([k for k, _ in imp], [v for _, v in imp], color="tab:blue")
    ax.set_xlabel("gain")
    ax.set_title("XGBoost feature importance (gain), top 20")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_calibration(path: Path, proba: np.ndarray, y: np.ndarray) -> None:
    """Calibration of the out-of-sample (walk-forward test) probabilities, per class."""
    import matplotlib.pyplot as plt

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
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_folds(path: Path, folds: list[dict[str, Any]]) -> None:
    """Per-fold metrics, model vs baselines."""
    import matplotlib.pyplot as plt

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
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
