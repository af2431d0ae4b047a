"""The training set as the model sees it: the Feast training set's warm rows, the feature matrix.

:func:`load_training_set` reads a ``jobs/ml/dataset.py`` parquet, keeps the rows that are warm
(``features_ready``) and have a known class label, sorted by bar time; :func:`matrix` is the
model's feature matrix (:data:`udfs.model_features.FEATURES` order, float32, NaN for missing),
:func:`class_index` the label as class indices (:data:`jobs.ml.dataset.CLASSES` order).
:data:`FEATURE_VIEWS` (the features grouped by the Feast view that holds them) and
:func:`feature_set_hash` go into the model's metadata.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

from infra.feature_store import CANDLES_VIEW, ENTITY_KEYS, ENTITY_TS, INDICATORS_VIEW
from jobs.ml.dataset import CLASSES, parse_labels
from udfs.model_features import CANDLE_FEATURES, FEATURES, INDICATOR_FEATURES

# the model's features (udfs/model_features.py), grouped by the Feast view that holds them
FEATURE_VIEWS: dict[str, list[str]] = {
    CANDLES_VIEW: list(CANDLE_FEATURES),
    INDICATORS_VIEW: list(INDICATOR_FEATURES),
}


def feature_set_hash(features: tuple[str, ...] | list[str]) -> str:
    """A short, order-sensitive fingerprint of a feature list."""
    return hashlib.sha256("\n".join(features).encode()).hexdigest()[:16]


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
