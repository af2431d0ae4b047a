"""A backtest's configuration and result, and the run's own settings and model periods.

:class:`BacktestConfig` is what ``candleflow backtest`` (and the demo, the bench) asks for:
the kline file, the traded range ``[start, end)`` (UTC), symbols, the training history
before ``start``, the walk-forward period ``retrain_every``, label, boosting rounds and
strategy overrides; :class:`BacktestResult` is what a run gives back. :func:`run_settings`
gives a run its own topics, Feast project/dir and model name, so runs never see each
other's data; :func:`walk_forward_bounds` are the start times of the models' periods.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from infra.settings import Settings

Progress = Callable[[str, int, int], None]


@dataclass
class BacktestConfig:
    data: Path
    start: pd.Timestamp
    end: pd.Timestamp
    symbols: tuple[str, ...] = ()  # empty = every symbol in the file
    timeframe: str = "1m"
    history: pd.Timedelta = field(default_factory=lambda: pd.Timedelta(days=7))
    retrain_every: pd.Timedelta = field(default_factory=lambda: pd.Timedelta(days=1))
    label: str = "fwd_ret_5"
    rounds: int = 150
    folds: int = 2
    nthread: int = 0
    strategy: dict[str, Any] = field(default_factory=dict)  # StrategyConfig overrides
    run_id: str = ""
    out_dir: Path | None = None

    def __post_init__(self) -> None:
        self.start = utc(self.start)
        self.end = utc(self.end)
        if self.end <= self.start:
            raise ValueError(f"end {self.end} must be after start {self.start}")
        if self.timeframe != "1m":
            raise ValueError("backtests replay 1m klines; timeframe must be 1m")
        self.run_id = self.run_id or f"bt{time.strftime('%Y%m%d%H%M%S')}{uuid.uuid4().hex[:4]}"


@dataclass
class BacktestResult:
    run_id: str
    out_dir: Path
    report: dict[str, Any]
    orders: pd.DataFrame
    fills: pd.DataFrame
    equity: pd.DataFrame
    predictions: pd.DataFrame
    bars: pd.DataFrame


def utc(ts: Any) -> pd.Timestamp:
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def ms(ts: pd.Timestamp) -> int:
    return int(ts.value // 1_000_000)


def run_settings(base: Settings, run_id: str, run_dir: Path) -> Settings:
    """The run's own topics, Feast project/dir and model name. ClickHouse stays the base's
    (chDB allows one data path per process); rows carry the strategy id and replays of the
    same rows collapse (ReplacingMergeTree keys)."""
    t = f"{run_id}."
    return base.model_copy(
        update={
            "topic_candles": t + "candles",
            "topic_features": t + "features",
            "topic_features_dlq": t + "features_dlq",
            "topic_predictions": t + "predictions",
            "topic_orders": t + "orders",
            "topic_fills": t + "fills",
            "topic_equity": t + "equity",
            "group_id": f"{run_id}-candles",
            "writer_group_id": f"{run_id}-feature-writer",
            "trading_group_id": f"{run_id}-trading-writer",
            "feast_project": run_id,
            "feast_dir": run_dir / "feast",
            "model_name": f"{run_id}_xgb",
            "reports_dir": run_dir / "models",
            "serving_model_poll_s": 0.0,
        }
    )


def walk_forward_bounds(cfg: BacktestConfig) -> list[pd.Timestamp]:
    """Model start times: start, start + retrain_every, ... (< end)."""
    out = []
    t = cfg.start
    while t < cfg.end:
        out.append(t)
        t = t + cfg.retrain_every
    return out
