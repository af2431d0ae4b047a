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
"""

from __future__ import annotations

import json
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import SecretStr

from infra.settings import Settings, mask_url, redact

log = logging.getLogger(__name__)
Progress = Callable[[str, int, int], None]
KLINE_COLUMNS = ("ts_ms", "symbol", "open", "high", "low", "close", "volume")


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
        self.start = _utc(self.start)
        self.end = _utc(self.end)
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


def _utc(ts: Any) -> pd.Timestamp:
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def _ms(ts: pd.Timestamp) -> int:
    return int(ts.value // 1_000_000)


# ------------------------------------------------------------------------------- data
def load_klines(
    path: Path, symbols: tuple[str, ...], lo: pd.Timestamp, hi: pd.Timestamp
) -> pd.DataFrame:
    """Real 1m klines (``ts_ms`` = bar open time) of ``symbols`` with ``lo <= open < hi``."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such data file")
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    missing = [c for c in KLINE_COLUMNS if c not in df]
    if missing:
        raise ValueError(
            f"{path}: not a kline file (columns {missing} missing; want {list(KLINE_COLUMNS)})"
        )
    if symbols:
        unknown = sorted(set(symbols) - set(df["symbol"].unique()))
        if unknown:
            raise ValueError(f"{path}: no klines for {unknown}")
        df = df[df["symbol"].isin(symbols)]
    df = df[(df["ts_ms"] >= _ms(lo)) & (df["ts_ms"] < _ms(hi))]
    if df.empty:
        raise ValueError(f"{path}: no klines between {lo} and {hi}")
    df = df.sort_values(["ts_ms", "symbol"], kind="stable").reset_index(drop=True)
    if "vwap" not in df:
        df["vwap"] = (df["high"] + df["low"] + df["close"]) / 3
    return df


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


def end_offsets(
    bootstrap: str, topic: str, expected: int | None = None, timeout_s: float = 60.0
) -> dict[int, int]:
    """Offset after the last record, per partition, found by reading the topic: Tansu's
    ListOffsets answers the last batch's base offset + 1 (../shared/FEASIBILITY.md), which
    would cut a bounded job's tail. With ``expected``, read until that many records."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=8 << 20
    )
    try:
        parts = c.partitions_for_topic(topic) or {0}
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        ends = {tp.partition: 0 for tp in tps}
        n = 0
        deadline = time.monotonic() + timeout_s
        idle_since = time.monotonic()
        while True:
            batch = c.poll(timeout_ms=500, max_records=10_000)
            for tp, recs in batch.items():
                n += len(recs)
                ends[tp.partition] = max(ends[tp.partition], recs[-1].offset + 1)
            now = time.monotonic()
            if batch:
                idle_since = now
            if expected is not None and n >= expected:
                return ends
            if expected is None and now - idle_since > 2.0:
                return ends
            if now > deadline:
                raise RuntimeError(
                    f"{topic}: {n} records after {timeout_s:.0f} s, expected {expected}"
                )
    finally:
        c.close()


def read_topic(bootstrap: str, topic: str) -> pd.DataFrame:
    """Every record of a (finished) topic, as a frame."""
    from infra.kafka import read_all

    return pd.DataFrame(read_all(bootstrap, topic, idle_timeout_s=2))


# ---------------------------------------------------------------------------- serving
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


# ------------------------------------------------------------------------------- run
def walk_forward_bounds(cfg: BacktestConfig) -> list[pd.Timestamp]:
    """Model start times: start, start + retrain_every, ... (< end)."""
    out = []
    t = cfg.start
    while t < cfg.end:
        out.append(t)
        t = t + cfg.retrain_every
    return out


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
    from infra.connectors import Endpoints
    from infra.feature_store import FeatureStoreClient
    from infra.kafka import OffsetTracker, ensure_topics, make_producer, send_tracked
    from jobs.flink import features, strategy
    from jobs.ml.dataset import build_dataset, parse_labels, timeframe_ms
    from jobs.ml.train import TrainConfig, train
    from jobs.writers.features import FeatureWriter, WriterConfig
    from udfs.strategy import StrategyConfig

    t_run = time.monotonic()
    stage = on_stage or (lambda name: log.info("%s", name))
    tick = on_progress or (lambda *_: None)
    timings: dict[str, float] = {}
    run_dir = (cfg.out_dir or base.state_dir / "backtests") / cfg.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    s = run_settings(base, cfg.run_id, run_dir)
    scfg = StrategyConfig(**{"strategy_id": base.strategy_id, **cfg.strategy})
    horizon = parse_labels([cfg.label])[0]
    bar_ms = timeframe_ms(cfg.timeframe)

    def timed(name: str, t0: float) -> None:
        timings[name] = round(time.monotonic() - t0, 2)

    # 1. replay --------------------------------------------------------------------------
    stage("1/8 replay klines -> candles topic")
    t0 = time.monotonic()
    klines = load_klines(cfg.data, cfg.symbols, cfg.start - cfg.history, cfg.end)
    symbols = tuple(sorted(klines["symbol"].unique()))
    topics = [
        s.topic_candles,
        s.topic_features,
        s.topic_features_dlq,
        s.topic_predictions,
        s.topic_orders,
        s.topic_fills,
        s.topic_equity,
    ]
    dlqs = [f"{t}_dlq" for t in topics[3:]]  # the trading writer's dead letters
    ensure_topics(s.kafka_bootstrap, topics + dlqs, partitions=1)
    producer = make_producer(s.kafka_bootstrap)
    tracker = OffsetTracker(s.topic_candles)
    for i, r in enumerate(klines.itertuples(index=False)):
        send_tracked(producer, tracker, features.kline_message(r), key=f"{r.symbol}|1m")
        if i % 5000 == 0:
            tick("replay", i, len(klines))
    producer.flush()
    producer.close()
    tick("replay", len(klines), len(klines))
    timed("replay", t0)

    # 2. features job --------------------------------------------------------------------
    stage("2/8 features job (Flink SQL + features UDF, bounded)")
    t0 = time.monotonic()
    features.submit(Endpoints(s, end_offsets=tracker.end), job_name=f"{cfg.run_id}-features").wait()
    # one features row per candle; the broker may show the last writes a moment later
    feat_end = end_offsets(s.kafka_bootstrap, s.topic_features, expected=len(klines))
    timed("features_job", t0)

    # 3. feature writer ------------------------------------------------------------------
    stage("3/8 feature writer -> Feast offline + Redis + ClickHouse")
    t0 = time.monotonic()
    client = FeatureStoreClient(s)
    client.apply()
    writer = FeatureWriter(s, WriterConfig.from_settings(s, until_idle_s=3.0), client=client)
    with writer:
        wstats = writer.run()
    timed("feature_writer", t0)

    # 4. walk-forward training -----------------------------------------------------------
    stage("4/8 walk-forward training (one model per period, trained before it)")
    t0 = time.monotonic()
    from bentoml._internal.configuration.containers import BentoMLContainer

    bentoml_home = Path(BentoMLContainer.bentoml_home.get())  # the store train() saves to
    schedule: list[dict[str, Any]] = []
    bounds = walk_forward_bounds(cfg)
    data_lo = cfg.start - cfg.history
    for k, t_k in enumerate(bounds):
        tick("train", k, len(bounds))
        # labels of bars before t_k - (h + 1) bars end before t_k: nothing from [t_k, ...)
        train_end = t_k - pd.Timedelta(milliseconds=(horizon + 1) * bar_ms)
        ds = run_dir / f"train_{k}.parquet"
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
                "from_ms": _ms(t_k),
                "tag": res.tag,
                "trained_on": [str(data_lo), str(train_end)],
                "cv_auc_up": res.report["metrics"]["model"].get("auc_up"),
            }
        )
    tick("train", len(bounds), len(bounds))
    schedule_path = run_dir / "schedule.json"
    schedule_path.write_text(json.dumps(schedule, indent=1))
    timed("training", t0)

    # 5 + 6. serve, strategy job ---------------------------------------------------------
    stage("5/8 bentoml serve (bentos/predictor)")
    t0 = time.monotonic()
    strategy_file = run_dir / "strategy.json"
    strategy_file.write_text(scfg.model_dump_json(indent=1))
    # walk-forward: each /score item names its model, which needs the admin token; a fresh
    # one per run, known only to this service and this strategy job
    s = s.model_copy(update={"serving_admin_token": SecretStr(secrets.token_urlsafe(24))})
    with serve(s, bentoml_home, schedule[0]["tag"], run_dir / "bentoml.log") as url:
        timed("serve_start", t0)
        stage("6/8 strategy job (predictions via /score, strategy + paper broker, bounded)")
        t0 = time.monotonic()
        ss = s.model_copy(
            update={
                "predictor_url": url,
                "predict_model_schedule": schedule_path,
                "strategy_config": strategy_file,
                "strategy_timeframe": cfg.timeframe,
                "group_id": f"{cfg.run_id}-strategy",
            }
        )
        strategy.submit(
            Endpoints(ss, end_offsets=feat_end),
            job_name=f"{cfg.run_id}-strategy",
            from_ms=_ms(cfg.start) + bar_ms,  # the first bar ending after start
            to_ms=_ms(cfg.end),
        ).wait()
        timed("strategy_job", t0)
        serving_check = on_serving(url, s) if on_serving else None

    # 7. trading writer ------------------------------------------------------------------
    stage("7/8 trading writer -> ClickHouse")
    t0 = time.monotonic()
    from jobs.writers.trading import write_until_idle

    trading = write_until_idle(s)
    timed("trading_writer", t0)

    # 8. report --------------------------------------------------------------------------
    stage("8/8 report")
    t0 = time.monotonic()
    preds = read_topic(s.kafka_bootstrap, s.topic_predictions)
    orders = read_topic(s.kafka_bootstrap, s.topic_orders)
    fills = read_topic(s.kafka_bootstrap, s.topic_fills)
    equity = read_topic(s.kafka_bootstrap, s.topic_equity)
    bars = klines[(klines.ts_ms >= _ms(cfg.start)) & (klines.ts_ms + bar_ms <= _ms(cfg.end))]
    bars = bars.assign(bar_end_ms=bars.ts_ms + bar_ms)
    report = write_report(
        run_dir,
        cfg,
        scfg,
        schedule,
        bars,
        preds,
        orders,
        fills,
        equity,
        extra={
            "rows": {
                "klines_replayed": len(klines),
                "bars_traded": len(bars),
                "features": int(sum(feat_end.values())),
                "feature_rows_written": wstats.rows,
                "predictions": len(preds),
                "orders": len(orders),
                "fills": len(fills),
                "equity_rows": len(equity),
            },
            "clickhouse": {"url": mask_url(s.clickhouse_url), **trading},
            "topics": topics,
            "timings_s": timings,
            **({"serving_check": serving_check} if serving_check is not None else {}),
        },
    )
    timed("report", t0)
    report["timings_s"] = timings
    report["seconds"] = round(time.monotonic() - t_run, 1)
    report["candles_per_s"] = round(len(klines) / report["seconds"], 1)
    (run_dir / "report.json").write_text(redact(json.dumps(report, indent=1, default=str), s))
    return BacktestResult(cfg.run_id, run_dir, report, orders, fills, equity, preds, bars)


def write_report(
    out: Path,
    cfg: BacktestConfig,
    scfg: Any,
    schedule: list[dict[str, Any]],
    bars: pd.DataFrame,
    preds: pd.DataFrame,
    orders: pd.DataFrame,
    fills: pd.DataFrame,
    equity: pd.DataFrame,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Metrics vs buy-and-hold, PNGs, report.json + report.md in ``out``."""
    from udfs.metrics import backtest_metrics, buy_and_hold_equity, plot_backtest

    eq = equity.sort_values("bar_end_ms").reset_index(drop=True) if len(equity) else equity
    fl = fills if len(fills) else pd.DataFrame(columns=["qty", "price", "fee", "side"])
    metrics = backtest_metrics(eq, fl, bars, cfg.timeframe, scfg.initial_cash)
    pngs: list[str] = []
    if len(eq):
        bh = buy_and_hold_equity(bars, scfg.initial_cash, eq["bar_end_ms"])
        pngs = [str(p) for p in plot_backtest(eq, bh, out)]
    status = preds["status"].value_counts().to_dict() if len(preds) else {}
    reasons = orders["reason"].value_counts().to_dict() if len(orders) else {}
    report: dict[str, Any] = {
        "run_id": cfg.run_id,
        "data": str(cfg.data),
        "start": str(cfg.start),
        "end": str(cfg.end),
        "symbols": sorted(bars["symbol"].unique().tolist()),
        "timeframe": cfg.timeframe,
        "strategy": scfg.model_dump(),
        "walk_forward": {
            "history": str(cfg.history),
            "retrain_every": str(cfg.retrain_every),
            "label": cfg.label,
            "models": schedule,
        },
        "metrics": {
            k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in metrics.items()
        },
        "predictions_by_status": status,
        "orders_by_reason": reasons,
        "plots": pngs,
        **extra,
    }
    (out / "report.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "report.md").write_text(markdown(report))
    return report


def _f(v: Any, fmt: str) -> str:
    return "n/a" if v is None else format(v, fmt)


def markdown(r: dict[str, Any]) -> str:
    m = r["metrics"]
    rows = [
        ("total return", "total_return", "bh_total_return", ".2%"),
        ("CAGR", "cagr", "bh_cagr", ".2%"),
        ("Sharpe", "sharpe", "bh_sharpe", ".2f"),
        ("Sortino", "sortino", "bh_sortino", ".2f"),
        ("max drawdown", "max_drawdown", "bh_max_drawdown", ".2%"),
        ("final equity", "final_equity", "bh_final_equity", ",.2f"),
    ]
    lines = [
        f"# Backtest {r['run_id']}",
        "",
        f"{', '.join(r['symbols'])} {r['timeframe']}, {r['start']} .. {r['end']}; "
        f"data {r['data']}.",
        "",
        "| metric | strategy | buy-and-hold (equal weight) |",
        "|---|---:|---:|",
        *[f"| {n} | {_f(m.get(a), f)} | {_f(m.get(b), f)} |" for n, a, b, f in rows],
        "",
        *(
            []
            if m.get("annualised", True)
            else [
                f"CAGR, Sharpe and Sortino are not annualised from {_f(m.get('days'), '.1f')} "
                "days (n/a under 30 days).",
                "",
            ]
        ),
        f"- round trips: {m.get('round_trips')}, win rate {_f(m.get('win_rate'), '.1%')}",
        f"- turnover: {_f(m.get('turnover'), '.2f')}x mean equity; fees paid "
        f"{_f(m.get('fees_paid'), ',.2f')}",
        f"- orders by reason: {r['orders_by_reason']}",
        f"- predictions by status: {r['predictions_by_status']}",
        "- walk-forward models: "
        + ", ".join(
            f"{x['tag']} from {pd.Timestamp(x['from_ms'], unit='ms', tz='UTC')}"
            for x in r["walk_forward"]["models"]
        ),
        "",
        *[f"![{Path(p).stem}]({Path(p).name})" for p in r["plots"]],
        "",
    ]
    return "\n".join(lines)
