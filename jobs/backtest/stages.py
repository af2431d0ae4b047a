"""The backtest's stages 1-7, one function each, sharing a :class:`RunContext`.

:func:`start_run` makes the run's folder, settings and strategy rules; then
:func:`replay_klines` (klines -> the run's candles topic), :func:`run_features_job` (the
features Flink job over exactly those offsets), :func:`write_features` (feature writer ->
Feast offline + Redis + ClickHouse), :func:`train_models` (one walk-forward model per
period, trained only on bars whose labels end before it; ``schedule.json``),
:func:`serve_and_trade` (`bentoml serve` of the predictor, :func:`serve`, and the strategy
job scoring through it) and :func:`write_trading` (trading writer -> ClickHouse). Each
stage announces itself, reports progress and records its time in ``ctx.timings``; the
report (stage 8) is ``jobs/backtest/report.py``, the driver ``jobs/backtest/run.py``.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
from pydantic import SecretStr

from infra.settings import Settings
from jobs.backtest.config import (
    BacktestConfig,
    Progress,
    ms,
    run_settings,
    walk_forward_bounds,
)
from jobs.backtest.data import end_offsets, load_klines

if TYPE_CHECKING:
    from infra.feature_store import FeatureStoreClient
    from jobs.writers.config import WriterStats
    from udfs.strategy import StrategyConfig

log = logging.getLogger(__name__)


@dataclass
class RunContext:
    """What the stages share: the run's settings (its own topics, Feast project, model
    name; :func:`serve_and_trade` adds the service's admin token), its config, folder,
    strategy rules, label horizon and bar length, and where stages report to."""

    s: Settings
    cfg: BacktestConfig
    run_dir: Path
    scfg: StrategyConfig
    horizon: int
    bar_ms: int
    stage: Callable[[str], None]
    tick: Progress
    timings: dict[str, float] = field(default_factory=dict)

    def timed(self, name: str, t0: float) -> None:
        self.timings[name] = round(time.monotonic() - t0, 2)


@dataclass
class WalkForwardModels:
    """Stage 4's output: the model schedule ``[{from_ms, tag, ...}]``, the file it is
    written to, and the BentoML store the models were saved to."""

    schedule: list[dict[str, Any]]
    path: Path
    bentoml_home: Path


def start_run(
    base: Settings,
    cfg: BacktestConfig,
    on_stage: Callable[[str], None] | None = None,
    on_progress: Progress | None = None,
) -> RunContext:
    """The run's folder (``out_dir`` or ``STATE_DIR/backtests``, then the run id), its own
    settings and strategy rules (the base's strategy id + ``cfg.strategy``)."""
    from jobs.ml.dataset import parse_labels, timeframe_ms
    from udfs.strategy import StrategyConfig

    run_dir = (cfg.out_dir or base.state_dir / "backtests") / cfg.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    return RunContext(
        s=run_settings(base, cfg.run_id, run_dir),
        cfg=cfg,
        run_dir=run_dir,
        scfg=StrategyConfig(**{"strategy_id": base.strategy_id, **cfg.strategy}),
        horizon=parse_labels([cfg.label])[0],
        bar_ms=timeframe_ms(cfg.timeframe),
        stage=on_stage or (lambda name: log.info("%s", name)),
        tick=on_progress or (lambda *_: None),
    )


def run_topics(s: Settings) -> list[str]:
    """The run's topics, in pipeline order."""
    return [
        s.topic_candles,
        s.topic_features,
        s.topic_features_dlq,
        s.topic_predictions,
        s.topic_orders,
        s.topic_fills,
        s.topic_equity,
    ]


def replay_klines(ctx: RunContext) -> tuple[pd.DataFrame, list[str], dict[int, int]]:
    """1. The klines of ``[start - history, end)`` -> the run's candles topic (the run's
    topics and the trading writer's dead-letter topics created first). Returns the klines,
    the run's topics and the candles topic's end offsets."""
    from infra.kafka import OffsetTracker, ensure_topics, make_producer, send_tracked
    from jobs.flink import features

    s, cfg = ctx.s, ctx.cfg
    ctx.stage("1/8 replay klines -> candles topic")
    t0 = time.monotonic()
    klines = load_klines(cfg.data, cfg.symbols, cfg.start - cfg.history, cfg.end)
    topics = run_topics(s)
    dlqs = [f"{t}_dlq" for t in topics[3:]]  # the trading writer's dead letters
    ensure_topics(s.kafka_bootstrap, topics + dlqs, partitions=1)
    producer = make_producer(s.kafka_bootstrap)
    tracker = OffsetTracker(s.topic_candles)
    for i, r in enumerate(klines.itertuples(index=False)):
        send_tracked(producer, tracker, features.kline_message(r), key=f"{r.symbol}|1m")
        if i % 5000 == 0:
            ctx.tick("replay", i, len(klines))
    producer.flush()
    producer.close()
    ctx.tick("replay", len(klines), len(klines))
    ctx.timed("replay", t0)
    return klines, topics, tracker.end


def run_features_job(ctx: RunContext, candles_end: dict[int, int], rows: int) -> dict[int, int]:
    """2. The features job (Flink SQL + features UDF) bounded to the replayed offsets;
    returns the features topic's end offsets once its ``rows`` rows are there."""
    from infra.connectors import Endpoints
    from jobs.flink import features

    s = ctx.s
    ctx.stage("2/8 features job (Flink SQL + features UDF, bounded)")
    t0 = time.monotonic()
    job_name = f"{ctx.cfg.run_id}-features"
    features.submit(Endpoints(s, end_offsets=candles_end), job_name=job_name).wait()
    # one features row per candle; the broker may show the last writes a moment later
    feat_end = end_offsets(s.kafka_bootstrap, s.topic_features, expected=rows)
    ctx.timed("features_job", t0)
    return feat_end


def write_features(ctx: RunContext) -> tuple[FeatureStoreClient, WriterStats]:
    """3. The feature writer until idle: features -> Feast offline + Redis + ClickHouse
    (the run's Feast project applied first); returns the Feast client and its stats."""
    from infra.feature_store import FeatureStoreClient
    from jobs.writers.features import FeatureWriter, WriterConfig

    s = ctx.s
    ctx.stage("3/8 feature writer -> Feast offline + Redis + ClickHouse")
    t0 = time.monotonic()
    client = FeatureStoreClient(s)
    client.apply()
    writer = FeatureWriter(s, WriterConfig.from_settings(s, until_idle_s=3.0), client=client)
    with writer:
        wstats = writer.run()
    ctx.timed("feature_writer", t0)
    return client, wstats


def train_models(
    ctx: RunContext, client: FeatureStoreClient, symbols: tuple[str, ...]
) -> WalkForwardModels:
    """4. Walk-forward training: the model for ``[t_k, t_k+1)`` is trained on a Feast
    training set of bars whose labels end before ``t_k``; the schedule -> schedule.json."""
    from jobs.ml.dataset import build_dataset
    from jobs.ml.train import TrainConfig, train

    s, cfg = ctx.s, ctx.cfg
    ctx.stage("4/8 walk-forward training (one model per period, trained before it)")
    t0 = time.monotonic()
    from bentoml._internal.configuration.containers import BentoMLContainer

    bentoml_home = Path(BentoMLContainer.bentoml_home.get())  # the store train() saves to
    schedule: list[dict[str, Any]] = []
    bounds = walk_forward_bounds(cfg)
    data_lo = cfg.start - cfg.history
    for k, t_k in enumerate(bounds):
        ctx.tick("train", k, len(bounds))
        # labels of bars before t_k - (h + 1) bars end before t_k: nothing from [t_k, ...)
        train_end = t_k - pd.Timedelta(milliseconds=(ctx.horizon + 1) * ctx.bar_ms)
        ds = ctx.run_dir / f"train_{k}.parquet"
        build_dataset(s, data_lo, train_end, [cfg.label], ds, symbols=symbols, client=client)
        res = train(
            s,
            ds,
            TrainConfig(label=cfg.label, folds=cfg.folds, rounds=cfg.rounds, nthread=cfg.nthread),
            model_name=s.model_name,
        )
        assert res.tag is not None
        schedule.append(
            {
                "from_ms": ms(t_k),
                "tag": res.tag,
                "trained_on": [str(data_lo), str(train_end)],
                "cv_auc_up": res.report["metrics"]["model"].get("auc_up"),
            }
        )
    ctx.tick("train", len(bounds), len(bounds))
    schedule_path = ctx.run_dir / "schedule.json"
    schedule_path.write_text(json.dumps(schedule, indent=1))
    ctx.timed("training", t0)
    return WalkForwardModels(schedule, schedule_path, bentoml_home)


@contextmanager
def serve(settings: Settings, bentoml_home: Path, tag: str, log_path: Path) -> Iterator[str]:
    """`bentoml serve` of the predictor on a free port (jobs/ml/serve.py, the one launcher),
    serving ``tag`` without polling for newer models; yields its base URL."""
    from jobs.ml.serve import predictor_env, serve_predictor

    env = predictor_env(
        settings.model_copy(update={"serving_model_poll_s": 0.0}),
        bentoml_home=bentoml_home,
        model_tag=tag,
    )
    with serve_predictor(env, log_path) as p:
        yield p.url


def serve_and_trade(
    ctx: RunContext,
    models: WalkForwardModels,
    feat_end: dict[int, int],
    on_serving: Callable[[str, Settings], Any] | None = None,
) -> Any:
    """5 + 6. `bentoml serve` of the predictor, then the strategy job over the features of
    ``[start, end)``, scoring each bar with its period's model through ``/score``; then
    ``on_serving(url, settings)`` while the service still runs, whose result is returned.
    ``ctx.s`` gains the service's admin token (the later stages use those settings)."""
    from infra.connectors import Endpoints
    from jobs.flink import strategy

    cfg = ctx.cfg
    ctx.stage("5/8 bentoml serve (bentos/predictor)")
    t0 = time.monotonic()
    strategy_file = ctx.run_dir / "strategy.json"
    strategy_file.write_text(ctx.scfg.model_dump_json(indent=1))
    # walk-forward: each /score item names its model, which needs the admin token; a fresh
    # one per run, known only to this service and this strategy job
    ctx.s = s = ctx.s.model_copy(
        update={"serving_admin_token": SecretStr(secrets.token_urlsafe(24))}
    )
    tag = models.schedule[0]["tag"]
    with serve(s, models.bentoml_home, tag, ctx.run_dir / "bentoml.log") as url:
        ctx.timed("serve_start", t0)
        ctx.stage("6/8 strategy job (predictions via /score, strategy + paper broker, bounded)")
        t0 = time.monotonic()
        ss = s.model_copy(
            update={
                "predictor_url": url,
                "predict_model_schedule": models.path,
                "strategy_config": strategy_file,
                "strategy_timeframe": cfg.timeframe,
                "group_id": f"{cfg.run_id}-strategy",
            }
        )
        strategy.submit(
            Endpoints(ss, end_offsets=feat_end),
            job_name=f"{cfg.run_id}-strategy",
            from_ms=ms(cfg.start) + ctx.bar_ms,  # the first bar ending after start
            to_ms=ms(cfg.end),
        ).wait()
        ctx.timed("strategy_job", t0)
        return on_serving(url, s) if on_serving else None


def write_trading(ctx: RunContext) -> dict[str, Any]:
    """7. The trading writer until idle: predictions, orders, fills, equity -> ClickHouse."""
    ctx.stage("7/8 trading writer -> ClickHouse")
    t0 = time.monotonic()
    from jobs.writers.trading import write_until_idle

    trading = write_until_idle(ctx.s)
    ctx.timed("trading_writer", t0)
    return trading
