"""`candleflow backtest`: replay history through the SAME jobs, bounded, then report.

Stages (all real: the Tansu broker, Flink MiniCluster jobs, Redis, Feast, chDB/ClickHouse,
`bentoml serve`; the run's topics, Feast project, model store and ClickHouse database are
its own, so runs never see each other's data):

1. **replay** the real 1m klines of ``--data`` in ``[start - history, end)`` into the run's
   ``candles`` topic (the candles job's message layout; the 2021 file has no VWAP, so
   ``(h + l + c) / 3`` stands in, as everywhere else in the project);
2. **features job** (sql/flink/features.sql) over exactly those offsets -> ``features``;
3. **feature writer** -> Feast offline store + Redis + ClickHouse;
4. **walk-forward training**: the test range is cut every ``retrain_every``; the model for
   ``[t_k, t_k+1)`` is trained (jobs/ml/train.py, Feast point-in-time training set) only on
   bars whose labels end before ``t_k``; the schedule ``[{from_ms, tag}]`` is written to
   ``schedule.json`` and the service's ``/score`` refuses any bar a model's training data
   reaches (``lookahead``), so the rule is enforced, not assumed;
5. **`bentoml serve`** of bentos/predictor with the run's model store;
6. **strategy job** (sql/flink/strategy.sql: predictions via ``/score`` + the strategy and
   paper broker of udfs/strategy_rules.md) over the features of ``[start, end)``;
7. **trading writer** -> ClickHouse; 8. **report**: metrics vs equal-weight buy-and-hold
   (udfs/metrics.py), equity and drawdown PNGs, ``report.json`` and ``report.md``.

This module is the driver (:func:`run_backtest`); beside it: ``config.py``
(:class:`BacktestConfig`, the run's own settings), ``data.py`` (klines in, topics read
back), ``stages.py`` (stages 1-7) and ``report.py`` (stage 8: report and plots).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from infra.settings import Settings
from jobs.backtest.config import BacktestConfig, BacktestResult, Progress
from jobs.backtest.report import report_stage
from jobs.backtest.stages import (
    replay_klines,
    run_features_job,
    serve_and_trade,
    start_run,
    train_models,
    write_features,
    write_trading,
)

__all__ = ["BacktestConfig", "BacktestResult", "run_backtest"]


def run_backtest(
    base: Settings,
    cfg: BacktestConfig,
    on_stage: Callable[[str], None] | None = None,
    on_progress: Progress | None = None,
    on_serving: Callable[[str, Settings], Any] | None = None,
) -> BacktestResult:
    """Run every stage (module docstring) and return the result; the local stack (broker +
    Redis of ``base``) must be up. ``on_serving(url, settings)`` is called while the
    service runs, after the strategy job (the demo asks it for online predictions); its
    result goes into the report as ``serving_check``."""
    t_run = time.monotonic()
    ctx = start_run(base, cfg, on_stage, on_progress)
    klines, topics, candles_end = replay_klines(ctx)
    feat_end = run_features_job(ctx, candles_end, rows=len(klines))
    client, wstats = write_features(ctx)
    models = train_models(ctx, client, symbols=tuple(sorted(klines["symbol"].unique())))
    serving_check = serve_and_trade(ctx, models, feat_end, on_serving)
    trading = write_trading(ctx)
    return report_stage(
        ctx,
        klines,
        models.schedule,
        topics=topics,
        feat_end=feat_end,
        feature_rows=wstats.rows,
        trading=trading,
        serving_check=serving_check,
        t_run=t_run,
    )
