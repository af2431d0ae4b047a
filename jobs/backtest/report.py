"""The backtest's report (stage 8): metrics vs buy-and-hold, PNG plots, report.json/.md.

:func:`report_stage` reads what the run's topics hold (predictions, orders, fills, equity),
keeps the bars of ``[start, end)``, and hands them to :func:`write_report`: the metrics of
udfs/metrics.py against equal-weight buy-and-hold, the equity and drawdown PNGs, the
report as ``report.json`` and :func:`markdown` as ``report.md``. It then adds the stage
timings, total seconds and candles per second, and rewrites ``report.json`` with secrets
redacted; the run's :class:`~jobs.backtest.config.BacktestResult` is what it returns.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from infra.settings import mask_url, redact
from jobs.backtest.config import BacktestConfig, BacktestResult, ms
from jobs.backtest.data import read_topic
from jobs.backtest.stages import RunContext


def report_stage(
    ctx: RunContext,
    klines: pd.DataFrame,
    schedule: list[dict[str, Any]],
    *,
    topics: list[str],
    feat_end: dict[int, int],
    feature_rows: int,
    trading: dict[str, Any],
    serving_check: Any,
    t_run: float,
) -> BacktestResult:
    """8. Read the run's output topics, write the report; ``t_run``: when the run began."""
    s, cfg, bar_ms = ctx.s, ctx.cfg, ctx.bar_ms
    ctx.stage("8/8 report")
    t0 = time.monotonic()
    preds = read_topic(s.kafka_bootstrap, s.topic_predictions)
    orders = read_topic(s.kafka_bootstrap, s.topic_orders)
    fills = read_topic(s.kafka_bootstrap, s.topic_fills)
    equity = read_topic(s.kafka_bootstrap, s.topic_equity)
    bars = klines[(klines.ts_ms >= ms(cfg.start)) & (klines.ts_ms + bar_ms <= ms(cfg.end))]
    bars = bars.assign(bar_end_ms=bars.ts_ms + bar_ms)
    report = write_report(
        ctx.run_dir,
        cfg,
        ctx.scfg,
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
                "feature_rows_written": feature_rows,
                "predictions": len(preds),
                "orders": len(orders),
                "fills": len(fills),
                "equity_rows": len(equity),
            },
            "clickhouse": {"url": mask_url(s.clickhouse_url), **trading},
            "topics": topics,
            "timings_s": ctx.timings,
            **({"serving_check": serving_check} if serving_check is not None else {}),
        },
    )
    ctx.timed("report", t0)
    report["timings_s"] = ctx.timings
    report["seconds"] = round(time.monotonic() - t_run, 1)
    report["candles_per_s"] = round(len(klines) / report["seconds"], 1)
    (ctx.run_dir / "report.json").write_text(redact(json.dumps(report, indent=1, default=str), s))
    return BacktestResult(cfg.run_id, ctx.run_dir, report, orders, fills, equity, preds, bars)


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
