"""Backtest throughput: the full replay through the real jobs vs a vectorized ceiling.

- ``pipeline``: ``jobs.backtest.run.run_backtest`` on real 2021 1m klines (``--symbols``,
  ``--history-days`` of training history + ``--days`` traded): Tansu broker, features job
  (Flink MiniCluster), feature writer (Feast offline + Redis + chDB), walk-forward XGBoost,
  ``bentoml serve``, strategy job (/score + strategy + paper broker), trading writer,
  report. candles/s = klines replayed / wall time; per-stage seconds are recorded.
- ``ceiling``: the same signals computed in one process, vectorized: TA-Lib batch
  (``udfs.indicators.compute_series``) per symbol over the same klines, the same
  walk-forward boosters (``inplace_predict`` on the whole matrix of each period) and the
  same rules (``udfs.strategy.run_batch``). Its predictions and orders are compared with the
  pipeline's (they must agree: same definitions), so the two sides do the same work. The
  ceiling is given the trained models, so the pipeline is also reported without training.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import machine_info, write_report

HERE = Path(__file__).resolve().parent
STRATEGY = {
    "entry_threshold": 0.03,
    "exit_threshold": -0.02,
    "position_fraction": 0.2,
    "cooldown_bars": 3,
    "max_hold_bars": 10,
    "stop_loss_pct": 0.005,
    "strategy_id": "bench",
}


def ceiling(res: Any, klines: pd.DataFrame, start_ms: int, end_ms: int) -> dict[str, Any]:
    """Vectorized features + predictions + rules over the same klines and models."""
    import bentoml

    from udfs.indicators import FEATURE_NAMES, INPUTS, compute_series
    from udfs.model_features import FEATURES
    from udfs.strategy import StrategyConfig, run_batch

    t0 = time.perf_counter()
    frames = []
    for _sym, g in klines.groupby("symbol", sort=True):
        g = g.sort_values("ts_ms").reset_index(drop=True)
        f = pd.DataFrame(compute_series({k: g[k].to_numpy(np.float64) for k in INPUTS}))
        frames.append(pd.concat([g, f], axis=1))
    feats = pd.concat(frames, ignore_index=True)
    feats["bar_end_ms"] = feats["ts_ms"] + 60_000
    feats["trade_count"] = 1  # what the replayed candles carry (jobs.flink.features.kline_message)
    feats["features_ready"] = feats[list(FEATURE_NAMES)].notna().all(axis=1)
    t_feat = time.perf_counter() - t0
    bars = feats[
        (feats.bar_end_ms > start_ms) & (feats.bar_end_ms <= end_ms) & feats.features_ready
    ]
    bars = bars.reset_index(drop=True)
    t1 = time.perf_counter()
    schedule = res.report["walk_forward"]["models"]
    starts = np.array([m["from_ms"] for m in schedule])
    which = np.searchsorted(starts, bars.bar_end_ms.to_numpy(), side="right") - 1
    proba = np.full((len(bars), 3), np.nan)
    for k, m in enumerate(schedule):
        idx = np.flatnonzero(which == k)
        booster = bentoml.xgboost.load_model(m["tag"])
        x = bars.loc[idx, list(FEATURES)].astype(np.float64).to_numpy(np.float32)
        proba[idx] = booster.inplace_predict(x)
    t_pred = time.perf_counter() - t1
    t2 = time.perf_counter()
    bars = bars.assign(p_down=proba[:, 0], p_up=proba[:, 2])
    orders, _fills, _equity = run_batch(bars, StrategyConfig(**STRATEGY))
    t_rules = time.perf_counter() - t2
    total = time.perf_counter() - t0
    # agreement with the pipeline
    got = res.predictions.merge(
        bars[["symbol", "bar_end_ms", "p_up", "p_down"]],
        on=["symbol", "bar_end_ms"],
        suffixes=("", "_ceiling"),
    )
    same_orders = set(orders.client_order_id) == set(res.orders.client_order_id)
    return {
        "seconds": round(total, 3),
        "candles_per_s": round(len(klines) / total, 1),
        "stage_seconds": {
            "features_talib_batch": round(t_feat, 3),
            "predict_inplace": round(t_pred, 3),
            "rules_run_batch": round(t_rules, 3),
        },
        "bars_traded": len(bars),
        "max_abs_diff_p_up_vs_pipeline": float(np.abs(got.p_up - got.p_up_ceiling).max()),
        "rows_compared": len(got),
        "same_order_ids_as_pipeline": bool(same_orders),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--symbols", default="BTCUSDT,ETHUSDT,SOLUSDT")
    ap.add_argument("--start", default="2021-04-20")
    ap.add_argument("--days", type=float, default=1.0, help="traded days")
    ap.add_argument("--history-days", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "backtest.json")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="cf-bench-backtest-"))
    os.environ["BENTOML_HOME"] = str(tmp / "bentoml")  # before BentoML reads its config
    sys.path.insert(0, str(HERE.parent))
    from infra.local import RedisServer, TansuBroker, free_port
    from infra.settings import Settings
    from jobs.backtest.data import load_klines
    from jobs.backtest.run import BacktestConfig, run_backtest

    broker = TansuBroker(port=free_port(), state_dir=tmp)
    redis = RedisServer(port=free_port(), state_dir=tmp)
    broker.start()
    redis.start()
    load_start = os.getloadavg()
    try:
        s = Settings(
            kafka_bootstrap=broker.bootstrap,
            state_dir=tmp,
            redis_host=redis.host,
            redis_port=redis.port,
        )
        start = pd.Timestamp(args.start, tz="UTC")
        cfg = BacktestConfig(
            data=s.data_dir / "binance_1m_top5_2021.csv.gz",
            start=start,
            end=start + pd.Timedelta(days=args.days),
            symbols=tuple(args.symbols.split(",")),
            history=pd.Timedelta(days=args.history_days),
            retrain_every=pd.Timedelta(days=1),
            rounds=args.rounds,
            strategy=STRATEGY,
            out_dir=tmp / "runs",
        )
        t0 = time.monotonic()
        res = run_backtest(s, cfg, on_stage=lambda m: print(f"[{time.monotonic() - t0:6.1f}s] {m}"))
        klines = load_klines(cfg.data, cfg.symbols, cfg.start - cfg.history, cfg.end)
        ceil = ceiling(res, klines, int(cfg.start.value // 10**6), int(cfg.end.value // 10**6))
    finally:
        broker.stop()
        redis.stop()
    r = res.report
    report = {
        "benchmark": "backtest: full replay through the real jobs vs a vectorized ceiling",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(load_avg_start=[round(x, 2) for x in load_start]),
        "versions": {p: version(p) for p in ("apache-flink", "bentoml", "xgboost-cpu", "ta-lib")},
        "setup": {
            "symbols": list(cfg.symbols),
            "traded": [str(cfg.start), str(cfg.end)],
            "history_days": args.history_days,
            "klines": len(klines),
            "models": len(r["walk_forward"]["models"]),
            "rounds": args.rounds,
            "strategy": STRATEGY,
        },
        "method": __doc__,
        "results": {
            "pipeline": {
                "seconds": r["seconds"],
                "candles_per_s": r["candles_per_s"],
                "stage_seconds": r["timings_s"],
                "rows": r["rows"],
                "orders_by_reason": r["orders_by_reason"],
            },
            "ceiling": ceil,
            "pipeline_share_of_ceiling": round(r["candles_per_s"] / ceil["candles_per_s"], 4),
            # the ceiling gets the trained models; the pipeline's time without training:
            "pipeline_candles_per_s_excluding_training": round(
                len(klines) / (r["seconds"] - r["timings_s"]["training"]), 1
            ),
        },
    }
    write_report(args.out, report)


if __name__ == "__main__":
    main()
