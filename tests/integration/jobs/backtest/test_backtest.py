"""`candleflow backtest` on real 1m candles through the real jobs, twice.

Real 2021 Binance klines (2 symbols; 2 days of history + 1 traded day) -> the run's candles
topic on a real Tansu broker -> features job (Flink MiniCluster) -> feature writer (Feast
offline + Redis + chDB) -> walk-forward XGBoost models (Feast training sets) -> `bentoml
serve` -> strategy job (predictions via /score, strategy + paper broker) -> trading writer
-> report. Checked: the two runs give the same orders, fills and equity (determinism); they
equal the independent re-computation of the rules (tests/reference_strategy.py) on the
job's own predictions, fees and slippage included; every bar was scored by the model of its
walk-forward period, trained on data before it; the report and ClickHouse agree.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from infra.settings import Settings
from tests.conftest import CANDLES_CSV, make_settings
from tests.integration.bentos.predictor_fixtures import use_bentoml_home
from tests.reference_strategy import reference_backtest

pytestmark = pytest.mark.integration
STRATEGY = {
    "entry_threshold": 0.02,
    "exit_threshold": -0.02,
    "position_fraction": 0.2,
    "cooldown_bars": 3,
    "max_hold_bars": 10,
    "stop_loss_pct": 0.004,
    "strategy_id": "bt",
}


def _cfg(out: Path) -> object:
    from jobs.backtest.run import BacktestConfig

    return BacktestConfig(
        data=CANDLES_CSV,
        start=pd.Timestamp("2021-04-20"),
        end=pd.Timestamp("2021-04-21"),
        symbols=("BTCUSDT", "ETHUSDT"),
        history=pd.Timedelta(days=2),
        retrain_every=pd.Timedelta(hours=12),
        rounds=30,
        folds=2,
        nthread=1,
        strategy=STRATEGY,
        out_dir=out,
    )


@pytest.fixture(scope="module")
def runs(
    broker: object, redis_server: object, state_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Settings, list[object]]]:
    from jobs.backtest.run import run_backtest

    use_bentoml_home(tmp_path_factory)
    base = make_settings(
        broker,  # type: ignore[arg-type]
        state_dir,
        redis_host=redis_server.host,  # type: ignore[attr-defined]
        redis_port=redis_server.port,  # type: ignore[attr-defined]
    )
    out = tmp_path_factory.mktemp("backtests")
    yield base, [run_backtest(base, _cfg(out)) for _ in range(2)]  # type: ignore[arg-type]


def _sorted(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return df.sort_values(keys, kind="stable").reset_index(drop=True)


def test_two_runs_give_the_same_orders_fills_and_equity(runs) -> None:
    _, (a, b) = runs
    assert a.run_id != b.run_id
    assert len(a.orders) > 20, a.report["orders_by_reason"]  # the rules actually trade
    assert len(a.fills) > 20
    keys = {"orders": ["client_order_id", "status"], "fills": ["client_order_id"]}
    for name, k in keys.items():
        x, y = _sorted(getattr(a, name), k), _sorted(getattr(b, name), k)
        pd.testing.assert_frame_equal(x, y, check_exact=True)
    pd.testing.assert_frame_equal(
        _sorted(a.equity, ["bar_end_ms"]), _sorted(b.equity, ["bar_end_ms"]), check_exact=True
    )
    pa = _sorted(a.predictions, ["symbol", "bar_end_ms"])
    pb = _sorted(b.predictions, ["symbol", "bar_end_ms"])
    np.testing.assert_array_equal(pa[["p_up", "p_down"]], pb[["p_up", "p_down"]])


def test_equals_an_independent_recomputation_of_the_rules(runs) -> None:
    from udfs.strategy import EQUITY_COLUMNS, FILL_COLUMNS, ORDER_COLUMNS

    _, (a, _) = runs
    preds = a.predictions
    ok = preds["status"] == "ok"
    p = preds.assign(
        p_up=preds["p_up"].where(ok, np.nan), p_down=preds["p_down"].where(ok, np.nan)
    )[["symbol", "bar_end_ms", "p_up", "p_down"]]
    bars = a.bars[["symbol", "bar_end_ms", "open", "high", "low", "close"]].merge(
        p, on=["symbol", "bar_end_ms"], how="inner", validate="one_to_one"
    )
    assert len(bars) == len(preds)  # every prediction row is a bar of the range
    cfg = json.loads((a.out_dir / "strategy.json").read_text())
    orders, fills, equity = reference_backtest(bars, cfg)
    for got, want, cols, k in (
        (a.orders, orders, list(ORDER_COLUMNS), ["client_order_id", "status"]),
        (a.fills, fills, list(FILL_COLUMNS), ["client_order_id"]),
        (a.equity, equity, list(EQUITY_COLUMNS), ["bar_end_ms"]),
    ):
        g, w = _sorted(got[cols], k), _sorted(want[cols], k)
        assert len(g) == len(w)
        pd.testing.assert_frame_equal(g, w, check_exact=False, rtol=1e-9, check_dtype=False)
    assert fills["fee"].sum() > 0


def test_walk_forward_models_never_score_their_own_past(runs) -> None:
    import bentoml

    from bentos.predictor.core import knowledge_end_ms, load_model

    _, (a, _) = runs
    schedule = a.report["walk_forward"]["models"]
    assert len(schedule) == 2
    starts = np.array([m["from_ms"] for m in schedule])
    preds = a.predictions
    want = [
        schedule[int(np.searchsorted(starts, t, side="right")) - 1]["tag"] for t in preds.bar_end_ms
    ]
    assert (preds["model_tag"] == want).all()
    assert set(preds["status"]) == {"ok"}, preds["reason"].value_counts()
    for m in schedule:
        end = knowledge_end_ms(load_model(m["tag"]))
        assert end is not None and end <= m["from_ms"]
        meta = bentoml.models.get(m["tag"]).info.metadata
        assert pd.Timestamp(meta["training_end"]) < pd.Timestamp(m["from_ms"], unit="ms", tz="UTC")


def test_report_and_clickhouse(runs) -> None:
    from infra.clickhouse import connect, trading_summary

    _, (a, _) = runs
    r = json.loads((a.out_dir / "report.json").read_text())
    m = r["metrics"]
    for k in (
        "total_return",
        "cagr",
        "sharpe",
        "sortino",
        "max_drawdown",
        "win_rate",
        "turnover",
        "fees_paid",
        "bh_total_return",
        "bh_max_drawdown",
    ):
        assert k in m
    assert m["fees_paid"] == pytest.approx(a.fills["fee"].sum())
    assert m["final_equity"] == pytest.approx(a.equity.sort_values("bar_end_ms").equity.iloc[-1])
    for png in ("equity_curve.png", "drawdown.png"):
        assert (a.out_dir / png).stat().st_size > 10_000
    assert "buy-and-hold" in (a.out_dir / "report.md").read_text()
    summary = trading_summary(connect(r["clickhouse"]["url"]), STRATEGY["strategy_id"])
    # both runs wrote the same rows (same ids): FINAL collapses them to one copy
    assert set(summary.orders["client_order_id"]) == set(a.orders["client_order_id"])
    assert len(summary.fills) == len(a.fills)
    assert summary.equity["equity"].iloc[-1] == pytest.approx(m["final_equity"])


def test_readme_request_against_the_served_model(runs, tmp_path: Path) -> None:
    """What the README's quick start and the demo's summary say to run after `make demo`:
    `candleflow serve --backtest ...`, then the curl request (its JSON body, on the
    service's port), on the backtest's 2021 features: 200 with the backtest's last model."""
    import os
    import re
    import subprocess
    import sys
    import urllib.request

    from infra.local import free_port
    from infra.procs import stop_tree
    from infra.settings import REPO_ROOT, settings_env
    from jobs.backtest.demo import CURL_LINE, SERVE_LINE
    from jobs.ml.serve import wait_ready

    readme = (REPO_ROOT / "README.md").read_text()
    assert SERVE_LINE in readme and CURL_LINE in readme
    body = re.search(r"-d '(\{.*\})'", CURL_LINE)
    assert body is not None
    base, (run, _) = runs
    port = free_port()
    cli = Path(sys.executable).parent / "candleflow"
    args = [*SERVE_LINE.split()[1:-1], str(run.out_dir), "--port", str(port)]  # not `last`
    env = os.environ | settings_env(base)
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(cli), *args], cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(proc, url, 120, log)  # BentoML's client; fails fast if the command exits
        req = urllib.request.Request(
            url + "/predict", data=body.group(1).encode(),
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(req, timeout=30) as r:
            assert r.status == 200
            answer = json.loads(r.read())
    finally:
        stop_tree(proc)
    last = run.report["walk_forward"]["models"][-1]["tag"]
    assert answer["model_tag"] == last
    [pred] = answer["predictions"]
    assert pred["symbol"] == "BTCUSDT" and pred["timeframe"] == "1m"
    probs = pred["probabilities"]
    assert abs(sum(probs.values()) - 1) < 1e-6
    assert pred["event_time"].startswith("2021-04-20T23:59:59.999")
