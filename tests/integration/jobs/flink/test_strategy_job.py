"""Strategy job on real services: Tansu broker, Flink MiniCluster, `bentoml serve` with a real
XGBoost model (trained on the first 400 real 1m candles of BTCUSDT and ETHUSDT), and the
`features` topic in the features job's message layout (udfs.indicators batch features).

1. Real candles (2 symbols x 1610 bars): the job's orders, fills and equity equal
   ``run_batch()`` on the job's own predictions; a second run gives the same orders.
2. A scripted price path (any prediction enters): stop-loss, the daily kill-switch and its
   re-arm the next UTC day; no order exceeds max_position_notional.
3. Degraded mode (unbounded job): the service is stopped mid-stream -> predictions are
   ``degraded``, no entries, equity counts them, the job keeps running; the service comes
   back -> predictions are ``ok`` again and entries resume.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from infra.connectors import Endpoints
from infra.kafka import OffsetTracker, ensure_topics, make_producer, read_all, send_tracked
from infra.local import RedisServer, TansuBroker
from infra.settings import Settings
from jobs.flink import strategy
from tests.conftest import CANDLES_CSV
from tests.integration.bentos.predictor_fixtures import (
    SERVICE_DIR,
    SERVICE_TARGET,
    BentoServer,
    Env,
    train_env,
    use_bentoml_home,
)
from udfs.strategy import EQUITY_COLUMNS, FILL_COLUMNS, ORDER_COLUMNS, StrategyConfig, run_batch

pytestmark = pytest.mark.integration
SYMBOLS = ("BTCUSDT", "ETHUSDT")
TRAIN_BARS = 400
STREAM_FROM = 390  # a few bars before the model's knowledge end: refused (lookahead)
TOTAL_BARS = 2000  # 2021-04-02 00:00 .. 2021-04-03 09:19 UTC: crosses a day boundary
MINUTE = 60_000
ATOL = 1e-9


# ------------------------------------------------------------------------------ fixtures
def trained_model(
    tmp_path_factory: pytest.TempPathFactory, redis: RedisServer, model_name: str
) -> Env:
    """An XGBoost model (30 rounds) on the first TRAIN_BARS real 1m candles of SYMBOLS."""
    tmp = tmp_path_factory.mktemp(model_name)
    home = use_bentoml_home(tmp_path_factory)
    candles = pd.read_csv(CANDLES_CSV)
    candles = candles[candles.symbol.isin(SYMBOLS)].sort_values(["ts_ms", "symbol"])
    candles = candles.groupby("symbol").head(TRAIN_BARS)
    return train_env(tmp, home, redis, candles, model_name=model_name, rounds=30)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Env:
    return trained_model(tmp_path_factory, redis_server, "cf_strategy_model")


@pytest.fixture(scope="module")
def server(model: Env) -> Iterator[BentoServer]:
    srv = BentoServer(model, SERVICE_TARGET, SERVICE_DIR, "serve-strategy")
    t = srv.start()
    print(f"\nbentoml serve ready in {t:.1f}s")
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def feature_rows() -> pd.DataFrame:
    """Real features (batch definition = the features job's) of both symbols, all bars."""
    from jobs.ml.dataset import feature_rows_from_candles

    candles = pd.read_csv(CANDLES_CSV)
    candles = candles[candles.symbol.isin(SYMBOLS)].sort_values(["ts_ms", "symbol"])
    candles = candles.groupby("symbol").head(TOTAL_BARS)
    return feature_rows_from_candles(candles, "1m")


# ------------------------------------------------------------------------------- helpers
def job_settings(
    broker: TansuBroker, state_dir: Path, server: BentoServer, config: dict[str, Any], **kw: Any
) -> Settings:
    """Unique topics and group, the test's predictor, a StrategyConfig file."""
    tag = uuid.uuid4().hex[:8]
    cfg_path = state_dir / f"strategy_{tag}.json"
    cfg_path.write_text(json.dumps(config))
    values: dict[str, Any] = {
        "kafka_bootstrap": broker.bootstrap,
        "state_dir": state_dir,
        "topic_features": f"features_{tag}",
        "topic_predictions": f"predictions_{tag}",
        "topic_orders": f"orders_{tag}",
        "topic_fills": f"fills_{tag}",
        "topic_equity": f"equity_{tag}",
        "group_id": f"strategy_{tag}",
        "predictor_url": f"http://127.0.0.1:{server.port}",
        "strategy_config": cfg_path,
        "predict_timeout_s": 10.0,
    }
    values |= kw
    s = Settings(**values)
    ensure_topics(
        s.kafka_bootstrap,
        [s.topic_features, s.topic_predictions, s.topic_orders, s.topic_fills, s.topic_equity],
    )
    return s


def outputs_to(s: Settings, tag: str) -> Settings:
    """Same input topic, new output topics and group (a second run of the job)."""
    out = s.model_copy(
        update={
            "topic_predictions": f"predictions_{tag}",
            "topic_orders": f"orders_{tag}",
            "topic_fills": f"fills_{tag}",
            "topic_equity": f"equity_{tag}",
            "group_id": f"strategy_{tag}",
        }
    )
    ensure_topics(
        out.kafka_bootstrap,
        [out.topic_predictions, out.topic_orders, out.topic_fills, out.topic_equity],
    )
    return out


def feature_message(r: dict[str, Any]) -> dict[str, Any]:
    """One `features` topic message (sql/flink/features.sql's features_sink layout)."""
    from udfs.indicators import FEATURE_NAMES

    def num(v: Any) -> float | None:
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)

    end = int(r["window_end_ms"])
    return {
        "feature_key": f"{r['symbol']}|1m",
        "symbol": r["symbol"],
        "timeframe": "1m",
        "window_start_ms": end - MINUTE,
        "window_end_ms": end,
        **{k: num(r[k]) for k in ("open", "high", "low", "close", "volume", "vwap")},
        "trade_count": int(r.get("trade_count", 0)),
        **{n: num(r[n]) for n in FEATURE_NAMES},
        "features_ready": bool(r["features_ready"]),
        "event_time": pd.Timestamp(end - 1, unit="ms", tz="UTC").isoformat(),
        "computed_at": pd.Timestamp.now(tz="UTC").isoformat(),
    }


def produce(s: Settings, rows: pd.DataFrame, tracker: OffsetTracker | None = None) -> OffsetTracker:
    """Rows in bar order (symbols of a bar together), as the features job emits them."""
    tracker = tracker or OffsetTracker(s.topic_features)
    producer = make_producer(s.kafka_bootstrap)
    for rec in rows.sort_values(["window_end_ms", "symbol"]).to_dict("records"):
        r = {str(k): v for k, v in rec.items()}
        send_tracked(producer, tracker, feature_message(r), key=f"{r['symbol']}|1m")
    producer.flush()
    producer.close()
    assert not tracker.errors, tracker.errors
    return tracker


def read(s: Settings, topic: str, expected: int | None = None) -> pd.DataFrame:
    rows = read_all(s.kafka_bootstrap, topic, expected=expected, idle_timeout_s=2)
    return pd.DataFrame(rows)


def outputs(s: Settings) -> dict[str, pd.DataFrame]:
    return {
        "predictions": read(s, s.topic_predictions),
        "orders": read(s, s.topic_orders),
        "fills": read(s, s.topic_fills),
        "equity": read(s, s.topic_equity),
    }


def wait_for(s: Settings, topic: str, n: int, timeout_s: float = 90) -> pd.DataFrame:
    deadline = time.monotonic() + timeout_s
    while True:
        df = read(s, topic)
        if len(df) >= n or time.monotonic() > deadline:
            assert len(df) >= n, f"{topic}: {len(df)} of {n} rows after {timeout_s}s"
            return df
        time.sleep(0.5)


def run_bounded(s: Settings, tracker: OffsetTracker, **kw: Any) -> float:
    t0 = time.monotonic()
    strategy.submit(Endpoints(s, end_offsets=tracker.end), **kw).wait()
    return time.monotonic() - t0


def batch_bars(features: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """run_batch input: the candles of the streamed rows + the job's own predictions."""
    bars = features.rename(columns={"window_end_ms": "bar_end_ms"})[
        ["symbol", "bar_end_ms", "open", "high", "low", "close"]
    ]
    p = predictions[["symbol", "bar_end_ms", "p_up", "p_down"]].astype(
        {"p_up": "float64", "p_down": "float64"}
    )
    merged = bars.merge(p, on=["symbol", "bar_end_ms"], how="inner", validate="one_to_one")
    assert len(merged) == len(bars) == len(predictions)
    return merged.sort_values(["bar_end_ms", "symbol"]).reset_index(drop=True)


def assert_frames_equal(got: pd.DataFrame, want: pd.DataFrame, columns: dict[str, str]) -> None:
    assert len(got) == len(want), (len(got), len(want))
    if not len(want):
        return
    got = got.reset_index(drop=True)
    want = want.reset_index(drop=True)
    for c, dtype in columns.items():
        if dtype == "float64":
            np.testing.assert_allclose(
                got[c].astype("float64").to_numpy(),
                want[c].to_numpy(),
                rtol=0,
                atol=ATOL,
                err_msg=c,
            )
        elif dtype == "bool":
            assert got[c].astype(bool).tolist() == want[c].tolist(), c
        elif dtype == "int64":
            assert got[c].astype("int64").tolist() == want[c].tolist(), c
        else:
            assert got[c].tolist() == want[c].tolist(), c


def assert_equals_run_batch(
    out: dict[str, pd.DataFrame], features: pd.DataFrame, config: StrategyConfig
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    orders, fills, equity = run_batch(batch_bars(features, out["predictions"]), config)
    assert_frames_equal(out["orders"], orders, ORDER_COLUMNS)
    assert_frames_equal(out["fills"], fills, FILL_COLUMNS)
    assert_frames_equal(out["equity"], equity, EQUITY_COLUMNS)
    for name in ("orders", "fills", "equity"):
        if len(out[name]):
            assert set(out[name].strategy) == {config.strategy_id}
            assert set(out[name].timeframe) == {"1m"}
    return orders, fills, equity


def scripted_rows(
    template: dict[str, Any], start_end_ms: int, closes: dict[str, list[float]]
) -> pd.DataFrame:
    """Ready feature rows (``template``'s features) with a scripted close path per symbol;
    open = the previous close (a gap happens inside the bar), high/low around them."""
    rows = []
    for sym, path in closes.items():
        prev = path[0]
        for k, c in enumerate(path):
            rows.append(
                {
                    **template,
                    "symbol": sym,
                    "window_end_ms": start_end_ms + k * MINUTE,
                    "open": prev,
                    "high": max(prev, c) * 1.001,
                    "low": min(prev, c) * 0.999,
                    "close": c,
                    "vwap": (prev + c) / 2,
                    "features_ready": True,
                }
            )
            prev = c
    return pd.DataFrame(rows)


def knowledge_end(model: Env) -> int:
    from bentos.predictor.core import knowledge_end_ms, load_model

    end = knowledge_end_ms(load_model(model.tag))
    assert end is not None
    return end


def template_row(feature_rows: pd.DataFrame) -> dict[str, Any]:
    ready = feature_rows[feature_rows.features_ready.astype(bool)]
    return {str(k): v for k, v in ready.iloc[-1].to_dict().items()}


# ---------------------------------------------------------------------------------- tests
def test_job_equals_run_batch_on_real_candles_and_is_deterministic(
    broker: TansuBroker,
    state_dir: Path,
    model: Env,
    server: BentoServer,
    feature_rows: pd.DataFrame,
) -> None:
    import bentoml

    from jobs.ml.training_set import matrix
    from udfs.model_features import FEATURES

    bars_per_symbol = feature_rows.groupby("symbol").cumcount()
    rows = feature_rows[bars_per_symbol >= STREAM_FROM].reset_index(drop=True)
    assert rows.features_ready.all() and len(rows) == len(SYMBOLS) * (TOTAL_BARS - STREAM_FROM)
    # thresholds from the model's own signal distribution, so that it trades
    proba = np.asarray(bentoml.xgboost.load_model(model.tag).inplace_predict(matrix(rows)))
    signal = proba[:, 2] - proba[:, 0]
    cfg = {
        "entry_threshold": float(np.quantile(signal, 0.8)),
        "exit_threshold": float(np.quantile(signal, 0.4)),
        "strategy_id": "det1",
    }
    config = StrategyConfig(**cfg)
    s = job_settings(broker, state_dir, server, cfg, strategy_id="det1")
    tracker = produce(s, rows)
    took = run_bounded(s, tracker)
    out = outputs(s)
    preds = out["predictions"]
    assert len(preds) == len(rows)
    print(
        f"\nstrategy job: {len(rows)} rows in {took:.1f}s (incl. start) = {len(rows) / took:.0f}/s"
    )

    # predictions: ok after the model's knowledge end, lookahead refusals before it
    end = knowledge_end(model)
    early = preds.bar_end_ms < end
    assert early.sum() > 0 and (preds[early].status == "refused").all()
    assert preds[early].reason.str.startswith("lookahead").all()
    assert (preds[~early].status == "ok").all(), preds[~early].status.value_counts()
    assert set(preds[~early].model_tag) == {model.tag}
    # the served probabilities are the booster's on the same features
    key = rows.set_index(["symbol", "window_end_ms"])
    ok = preds[~early].set_index(["symbol", "bar_end_ms"])
    want = np.asarray(
        bentoml.xgboost.load_model(model.tag).inplace_predict(
            matrix(key.loc[ok.index].reset_index(), FEATURES)
        )
    )
    np.testing.assert_allclose(ok[["p_down", "p_flat", "p_up"]].to_numpy(), want, atol=1e-6)
    np.testing.assert_allclose(ok.signal, ok.p_up - ok.p_down, rtol=0, atol=0)
    assert set(preds.prediction_key) == {f"{sym}|1m" for sym in SYMBOLS}
    lat = preds.groupby("predicted_at_ms").latency_ms.first()
    print(
        f"/score calls: {len(lat)}, latency ms p50 {lat.median():.0f} max {lat.max():.0f}, "
        f"rows/call {len(preds) / len(lat):.0f}"
    )

    # orders, fills, equity == run_batch on the job's predictions
    orders, fills, equity = assert_equals_run_batch(out, rows, config)
    assert len(orders) >= 20 and len(fills) >= 20, (len(orders), len(fills))
    assert len(equity) == TOTAL_BARS - STREAM_FROM
    assert {"signal_entry", "signal_exit"} <= set(orders.reason)

    # determinism: the same input again, into new output topics -> the same orders
    s2 = outputs_to(s, uuid.uuid4().hex[:8])
    run_bounded(s2, tracker)
    again = read(s2, s2.topic_orders, expected=len(out["orders"]))
    assert_frames_equal(again, out["orders"], ORDER_COLUMNS)
    assert again.client_order_id.tolist() == out["orders"].client_order_id.tolist()


def test_stop_loss_kill_switch_and_position_cap(
    broker: TansuBroker,
    state_dir: Path,
    model: Env,
    server: BentoServer,
    feature_rows: pd.DataFrame,
) -> None:
    cfg = {
        "entry_threshold": -1.0,  # any prediction enters
        "exit_threshold": -2.0,  # no signal exits: only stops, max-hold, kill-switch
        "position_fraction": 0.5,  # 5000 wanted, capped by max_position_notional
        "max_position_notional": 2000.0,
        "cooldown_bars": 5,
        "max_hold_bars": 1000,
        "stop_loss_pct": 0.02,
        "max_daily_loss_pct": 0.03,
        "strategy_id": "risk1",
    }
    config = StrategyConfig(**cfg)
    # bar k ends at 23:41 + k min of a day after the model's knowledge end: bar 19 is the
    # last of that day, bar 20 the first of the next
    day = (knowledge_end(model) // 86_400_000 + 2) * 86_400_000
    start = day - 19 * MINUTE
    a = [100.0] * 2 + [97.5] * 10 + [85.0] * 13  # -2.5 %: stop-loss; -12.8 %: kill-switch
    b = [50.0] * 12 + [44.0] * 13
    rows = scripted_rows(template_row(feature_rows), start, {"AAAUSDT": a, "BBBUSDT": b})
    s = job_settings(broker, state_dir, server, cfg, strategy_id="risk1")
    # a crash bar before and after the range [from_ms, to_ms]: the job must ignore them
    outside = scripted_rows(
        template_row(feature_rows), start - MINUTE, {"AAAUSDT": [1.0], "BBBUSDT": [1.0]}
    )
    outside = pd.concat([outside, outside.assign(window_end_ms=start + len(a) * MINUTE)])
    tracker = produce(s, pd.concat([outside, rows]))
    run_bounded(s, tracker, from_ms=start, to_ms=start + (len(a) - 1) * MINUTE)
    out = outputs(s)
    assert len(out["predictions"]) == len(rows)
    assert (out["predictions"].status == "ok").all()
    assert_equals_run_batch(out, rows, config)

    bar = {k: start + k * MINUTE for k in range(len(a))}
    o = out["orders"]
    new = o[o.status == "new"]
    assert len(new) and len(new) == len(o)
    # per-symbol cap on every order
    assert (new.qty * new.decision_price <= config.max_position_notional + 1e-9).all()
    buys = new[new.side == "buy"]
    assert buys.qty.mul(buys.decision_price).max() > 1900  # the cap binds (5000 wanted)
    # stop-loss on AAA at bar 2, re-entry after the cooldown
    stop = new[new.reason == "stop_loss"]
    assert stop[["symbol", "bar_end_ms"]].values.tolist() == [["AAAUSDT", bar[2]]]
    assert ((buys.symbol == "AAAUSDT") & (buys.bar_end_ms == bar[8])).any()
    # kill-switch at bar 12: both positions sold, no entries for the rest of the day
    kill = new[new.reason == "kill_switch"]
    assert sorted(kill.symbol) == ["AAAUSDT", "BBBUSDT"]
    assert set(kill.bar_end_ms) == {bar[12]}
    eq = out["equity"].set_index("bar_end_ms")
    assert not eq.loc[bar[11], "killed"]
    assert eq.loc[[bar[k] for k in range(12, 20)], "killed"].all()
    assert eq.equity.loc[bar[12]] <= 0.97 * config.initial_cash
    assert not buys.bar_end_ms.between(bar[12], bar[19]).any()
    # the next UTC day re-arms it: entries resume at once
    assert not eq.loc[bar[20], "killed"]
    assert set(buys[buys.bar_end_ms == bar[20]].symbol) == {"AAAUSDT", "BBBUSDT"}
    fills = out["fills"]
    assert set(fills[fills.client_order_id.isin(kill.client_order_id)].bar_end_ms) == {bar[13]}


def test_degraded_mode_when_the_service_is_down(
    broker: TansuBroker,
    state_dir: Path,
    model: Env,
    server: BentoServer,
    feature_rows: pd.DataFrame,
) -> None:
    """Last: stops the module's server and starts it again on the same port."""
    cfg = {
        "entry_threshold": -1.0,  # any prediction enters
        "exit_threshold": 1.0,  # ... and exits on the next bar: flat every other bar
        "cooldown_bars": 0,
        "max_hold_bars": 1000,
        "strategy_id": "deg1",
    }
    s = job_settings(
        broker,
        state_dir,
        server,
        cfg,
        strategy_id="deg1",
        predict_timeout_s=2.0,
        predict_retries=1,
        predict_circuit_open_s=1.0,
    )
    start = knowledge_end(model) + 100 * MINUTE
    n = 4  # bars per phase
    path = [100.0] * (3 * n + 1)
    rows = scripted_rows(
        template_row(feature_rows), start, {"CCCUSDT": path, "DDDUSDT": [50.0] * len(path)}
    )
    phase = [
        rows[rows.window_end_ms.between(start + k * n * MINUTE, start + (k * n + n - 1) * MINUTE)]
        for k in range(3)
    ]
    bar = lambda k: start + k * MINUTE  # noqa: E731
    handle = strategy.submit(Endpoints(s))  # unbounded: runs until cancelled
    job = handle.result.get_job_client()
    try:
        tracker = produce(s, phase[0])
        p = wait_for(s, s.topic_predictions, 2 * n, timeout_s=120)
        assert (p.status == "ok").all(), p.status.value_counts()

        server.stop()  # the service goes down mid-stream
        produce(s, phase[1], tracker)
        p = wait_for(s, s.topic_predictions, 4 * n)
        down = p[p.bar_end_ms.between(bar(n), bar(2 * n - 1))]
        assert len(down) == 2 * n and (down.status == "degraded").all(), down.status.value_counts()
        assert down.reason.notna().all() and down.p_up.isna().all()
        assert job.get_job_status().result().name == "RUNNING"

        restart_s = server.start()  # back, same port
        time.sleep(s.predict_circuit_open_s)
        produce(s, phase[2], tracker)
        p = wait_for(s, s.topic_predictions, 6 * n)
        back = p[p.bar_end_ms >= bar(2 * n)]
        assert (back.status == "ok").all(), back[["status", "reason"]]
        produce(s, rows[rows.window_end_ms == bar(3 * n)], tracker)  # closes the last bar
        eq = wait_for(s, s.topic_equity, 3 * n).set_index("bar_end_ms")
        assert job.get_job_status().result().name == "RUNNING"
        print(f"\nservice restart {restart_s:.1f}s; degraded reason: {down.reason.iloc[0][:120]}")
    finally:
        job.cancel().result()
    degraded = {bar(k): (2 if n <= k < 2 * n else 0) for k in range(3 * n)}
    assert eq.loc[list(degraded), "degraded"].tolist() == list(degraded.values())
    orders = read(s, s.topic_orders)
    buys = orders[orders.side == "buy"]
    assert not buys.bar_end_ms.between(bar(n), bar(2 * n - 1)).any()  # no entries when down
    assert (buys.bar_end_ms < bar(n)).any() and (buys.bar_end_ms >= bar(2 * n)).any()
