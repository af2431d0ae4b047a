"""Training metrics and splits (jobs/ml/evaluation.py, jobs/ml/splits.py) against hand-computed
values."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from jobs.ml.evaluation import auc, log_loss, top_signals
from jobs.ml.splits import walk_forward_splits


def _auc_pairs(y: np.ndarray, s: np.ndarray) -> float:
    """AUC by definition: P(score_pos > score_neg) + 0.5 P(tie), over all pairs."""
    pos, neg = s[y == 1], s[y == 0]
    wins = sum((p > n) + 0.5 * (p == n) for p, n in itertools.product(pos, neg))
    return float(wins / (len(pos) * len(neg)))


def test_auc_equals_the_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    s = rng.integers(0, 6, 60).astype(float)  # many ties
    assert auc(y, s) == pytest.approx(_auc_pairs(y, s), abs=1e-12)
    assert auc(np.ones(5), np.arange(5.0)) is None


def test_log_loss() -> None:
    proba = np.array([[0.2, 0.3, 0.5], [0.7, 0.2, 0.1]])
    assert log_loss(np.array([2, 0]), proba) == pytest.approx(-(np.log(0.5) + np.log(0.7)) / 2)


def test_top_decile_hit_rate_trades_the_sign_of_the_largest_signals() -> None:
    signal = np.array([0.9, -0.8] + [0.05, -0.02, 0.0] * 6)
    ret = np.array([0.01, 0.02] + [0.3, 0.2, -0.1] * 6)
    out = top_signals(signal, ret)  # top 10 % of 20 rows by |signal|: 0.9 and -0.8
    assert out["signals"] == 2
    # 0.9 long with +1 % (hit); -0.8 short with +2 % (miss)
    assert out["hit_rate"] == 0.5
    assert out["mean_ret_bps"] == pytest.approx((0.01 - 0.02) / 2 * 1e4)
    assert top_signals(None, ret)["hit_rate"] is None


def test_walk_forward_is_expanding_and_purged() -> None:
    ts = pd.Series(pd.date_range("2021-01-01", periods=120, freq="1min", tz="UTC"))
    splits = walk_forward_splits(ts, 3, pd.Timedelta(minutes=5))
    tests = np.concatenate([te for _, te in splits])
    assert len(np.unique(tests)) == len(tests)  # test blocks do not overlap
    for k, (tr, te) in enumerate(splits):
        assert ts[tr].max() < ts[te].min() - pd.Timedelta(minutes=5)
        assert k == 0 or len(tr) > len(splits[k - 1][0])
    with pytest.raises(ValueError):
        walk_forward_splits(ts.iloc[:3], 5, pd.Timedelta(0))


def test_rolling_splits_use_only_the_last_blocks() -> None:
    import pandas as pd

    from jobs.ml.splits import walk_forward_splits

    ts = pd.Series(pd.date_range("2021-01-01", periods=600, freq="min", tz="UTC"))
    gap = pd.Timedelta(minutes=5)
    exp = walk_forward_splits(ts, 5, gap)
    roll = walk_forward_splits(ts, 5, gap, "rolling", 2)
    for k, ((tr_e, te_e), (tr_r, te_r)) in enumerate(zip(exp, roll, strict=True), start=1):
        assert (te_e == te_r).all()
        assert set(tr_r) <= set(tr_e)
        assert ts[tr_r].max() < ts[te_r].min() - gap  # purged before the test block
        if k > 2:
            assert len(tr_r) < len(tr_e)
            assert ts[tr_r].min() >= ts[te_r].min() - pd.Timedelta(minutes=200)  # 2 blocks
    with pytest.raises(ValueError, match="scheme"):
        walk_forward_splits(ts, 5, gap, "sliding")
