"""Strategy job recovery on a real standalone Flink cluster.

The strategy job (real features of 2 symbols from the real 2021 1m candles, scored by a real
XGBoost model behind `bentoml serve`) runs on a standalone cluster (JobManager + 1
TaskManager process), checkpointing every second; its account (cash, positions, the
kill-switch) lives in Flink ``ValueState``. A clean run gives the reference. Then the same
input runs again and the TaskManager is SIGKILLed mid-run (job running, checkpoints
completed, part of the equity written); a new TaskManager is started; the job restarts from
its last completed checkpoint and finishes. Both runs go through the real trading writer
into ClickHouse (the 18.16 server): the ``trading_orders``, ``trading_fills`` and
``trading_equity`` tables under FINAL equal the clean run's (0 lost, 0 duplicated, every
value the same); the topics hold at least the clean run's records (at-least-once sinks
may repeat some). A failure names the first equity bar that differs and compares the two
runs' predictions. Before udfs/flink_strategy.py stepped every due bar at each timer, this
failed now and then: bars whose timers PyFlink had fired inside a checkpoint were restored
without timers and skipped (140 bars in one run).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from infra.clickhouse import TRADING_TABLES, connect
from infra.flink_cluster import FlinkCluster
from infra.local import ClickHouseServer, RedisServer, TansuBroker
from infra.settings import REPO_ROOT, Settings
from jobs.writers.trading import TradingWriter, trading_config
from tests.conftest import CANDLES_CSV
from tests.integration.bentos.predictor_fixtures import (
    SERVICE_DIR,
    SERVICE_TARGET,
    BentoServer,
    Env,
)
from tests.integration.jobs.flink.test_recovery import (
    count_topic,
    standalone_cluster,
    tasks_running,
    wait_for,
)
from tests.integration.jobs.flink.test_strategy_job import (
    job_settings,
    knowledge_end,
    outputs_to,
    produce,
    trained_model,
)

pytestmark = pytest.mark.integration
ROOT = REPO_ROOT
STRATEGY_JOB = ROOT / "jobs" / "flink" / "strategy.py"
JOB_NAME = "candleflow-strategy"
SYMBOLS = ("BTCUSDT", "ETHUSDT")
FROM_BAR = 450  # after the model's knowledge end: every prediction is `ok`
BARS = 6_000  # per symbol: 11,100 rows to score and trade, ~4 days of 1m bars
# rows per /score call: small, so the job runs long enough to be killed mid-run
ARROW_BATCH = 100
KEYS = {
    "orders": ("strategy", "client_order_id"),
    "fills": ("strategy", "client_order_id"),
    "equity": ("strategy", "bar_end_ms"),
}


# ------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def cluster(state_dir: Path) -> Iterator[FlinkCluster]:
    yield from standalone_cluster(state_dir / "strategy_recovery")


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory, redis_server: RedisServer) -> Env:
    return trained_model(tmp_path_factory, redis_server, "cf_recovery_model")


@pytest.fixture(scope="module")
def server(model: Env) -> Iterator[BentoServer]:
    srv = BentoServer(model, SERVICE_TARGET, SERVICE_DIR, "serve-strategy-recovery")
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def rows(model: Env) -> pd.DataFrame:
    """Real features (the features job's definition) of both symbols after the model's
    knowledge end."""
    from jobs.ml.dataset import feature_rows_from_candles

    candles = pd.read_csv(CANDLES_CSV)
    candles = candles[candles.symbol.isin(SYMBOLS)].sort_values(["ts_ms", "symbol"])
    candles = candles.groupby("symbol").head(BARS)
    f = feature_rows_from_candles(candles, "1m")
    f = f[f.groupby("symbol").cumcount() >= FROM_BAR].reset_index(drop=True)
    assert f.features_ready.all() and f.window_end_ms.min() > knowledge_end(model)
    return f


@pytest.fixture(scope="module")
def config(model: Env, rows: pd.DataFrame) -> dict[str, Any]:
    """Thresholds from the model's own signal, so that it trades (often)."""
    import bentoml

    from jobs.ml.training_set import matrix

    proba = np.asarray(bentoml.xgboost.load_model(model.tag).inplace_predict(matrix(rows)))
    signal_ = proba[:, 2] - proba[:, 0]
    return {
        "entry_threshold": float(np.quantile(signal_, 0.8)),
        "exit_threshold": float(np.quantile(signal_, 0.4)),
        "stop_loss_pct": 0.01,
        "max_daily_loss_pct": 0.02,
        "strategy_id": "rec1",
    }


# ------------------------------------------------------------------------------- helpers
def submit(cluster: FlinkCluster, s: Settings, n_rows: int) -> str:
    t0 = int(time.time() * 1000)
    rc = cluster.run_py(
        STRATEGY_JOB,
        ["--end-offsets", f"0:{n_rows}"],
        detach=True,
        settings_for_job=s,
        timeout_s=240,
    )
    assert rc == 0, "flink run strategy failed"
    found: dict[str, str] = {}

    def listed() -> bool:
        for j in cluster.jobs():
            if j["name"] == JOB_NAME and j["start-time"] >= t0:
                found["jid"] = j["jid"]
        return bool(found)

    wait_for(listed, 60, "the strategy job listed")
    return found["jid"]


def wait_finished(cluster: FlinkCluster, jid: str, timeout_s: float) -> None:
    def done() -> bool:
        state = cluster.find_job(jid)["state"]
        assert state not in ("FAILED", "CANCELED"), f"strategy job ended {state}"
        return bool(state == "FINISHED")

    wait_for(done, timeout_s, "the strategy job to finish")


def tables(s: Settings, ch: ClickHouseServer) -> dict[str, list[dict[str, Any]]]:
    """The run's topics through the real trading writer into a fresh database; the orders,
    fills and equity tables under FINAL."""
    url = ch.url_for(f"srec_{uuid.uuid4().hex[:8]}")
    ws = s.model_copy(update={"clickhouse_url": url})
    w = TradingWriter(
        ws,
        trading_config(
            ws, group_id=f"tw_{uuid.uuid4().hex[:6]}", until_idle_s=3.0, max_wait_ms=500
        ),
    )
    with w:
        w.run()
    store = connect(url)
    try:
        out = {}
        for kind, key in KEYS.items():
            order = ", ".join(key)
            out[kind] = store.query(f"SELECT * FROM {TRADING_TABLES[kind]} FINAL ORDER BY {order}")
        return out
    finally:
        store.close()


def topic_records(s: Settings, topic: str) -> list[dict[str, Any]]:
    """Every record of one of the run's topics, read until 3 s idle (not to the reported end:
    Tansu's end offset is the base of the last batch + 1, so an end-of-partition read misses
    the last batch; count_topic is only a progress gauge here)."""
    from infra.kafka import read_all

    return read_all(s.kafka_bootstrap, topic, idle_timeout_s=3)


def divergence(
    clean: Settings,
    killed: Settings,
    eq_clean: list[dict[str, Any]],
    eq_killed: list[dict[str, Any]],
) -> str:
    """Where a killed run parts from the clean one: the first equity bar that differs and
    how the two runs' predictions compare (the strategy's only input besides prices)."""
    from collections import Counter

    def answers(s: Settings) -> dict[tuple[str, int], set[tuple[Any, ...]]]:
        out: dict[tuple[str, int], set[tuple[Any, ...]]] = {}
        for r in topic_records(s, s.topic_predictions):
            key = (r["symbol"], int(r["bar_end_ms"]))
            out.setdefault(key, set()).add((r["status"], r["p_up"], r["p_down"]))
        return out

    a, b = answers(clean), answers(killed)
    differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    statuses = Counter(st for v in b.values() for st, _, _ in v)
    first = next(
        ((w["bar_end_ms"], w, g) for w, g in zip(eq_clean, eq_killed, strict=False) if w != g), None
    )
    return (
        f"predictions: {len(a)} keys clean, {len(b)} killed, {len(differ)} differ "
        f"(e.g. {[(k, a.get(k), b.get(k)) for k in differ[:3]]}); killed statuses "
        f"{dict(statuses)}; first equity difference: {first}"
    )


# --------------------------------------------------------------------------------- test
def test_sigkill_taskmanager_mid_run_equals_clean_run(
    cluster: FlinkCluster,
    broker: TansuBroker,
    state_dir: Path,
    server: BentoServer,
    rows: pd.DataFrame,
    config: dict[str, Any],
    clickhouse_server: ClickHouseServer,
) -> None:
    n = len(rows)
    s = job_settings(
        broker,
        state_dir / "strategy_recovery",
        server,
        config,
        strategy_id=config["strategy_id"],
        checkpoint_interval_ms=1_000,
        restart_delay_ms=1_000,
        python_arrow_batch_size=ARROW_BATCH,
    )
    tracker = produce(s, rows)
    assert tracker.end == {0: n}

    # the clean run: the reference
    t0 = time.monotonic()
    wait_finished(cluster, submit(cluster, s, n), 600)
    clean_s = time.monotonic() - t0
    bars = n // len(SYMBOLS)
    # the job's group id gets "-strategy" appended (jobs/strategy.main)
    assert len(topic_records(s, s.topic_equity)) == bars
    clean = tables(s, clickhouse_server)
    assert len(clean["equity"]) == bars
    assert len(clean["orders"]) >= 50 and len(clean["fills"]) >= 50, {
        k: len(v) for k, v in clean.items()
    }
    assert {"signal_entry", "signal_exit", "stop_loss"} <= {o["reason"] for o in clean["orders"]}

    # the same input again, into new output topics; SIGKILL the TaskManager mid-run
    k = outputs_to(s, uuid.uuid4().hex[:8])
    jid = submit(cluster, k, n)
    seen: dict[str, Any] = {}

    def mid_run() -> bool:
        if cluster.find_job(jid)["state"] == "FINISHED":
            raise AssertionError(f"the job finished before the kill ({seen})")
        if not tasks_running(cluster, jid):
            return False
        cps = cluster.checkpoints(jid)["completed"]
        eq = count_topic(k.kafka_bootstrap, k.topic_equity)
        seen.update(checkpoints=cps, equity=eq)
        return cps >= 2 and 0.1 * bars <= eq <= 0.7 * bars

    wait_for(mid_run, 300, "the strategy job mid-run with completed checkpoints")
    [tm] = cluster.taskmanager_pids()
    os.kill(tm, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: cluster.overview()["taskmanagers"] == 0, 60, "the TaskManager to be lost")
    cluster.add_taskmanager()
    wait_finished(cluster, jid, 600)
    recovered_s = time.monotonic() - killed_at
    cp = cluster.checkpoints(jid)
    assert cp["restored"] >= 1 and cp["restored_from"], cp

    # the topics hold at least every record (at-least-once sinks may repeat some) ...
    records = topic_records(k, k.topic_equity)
    emitted = len(records)
    assert emitted >= bars and len({r["bar_end_ms"] for r in records}) == bars
    # ... and ClickHouse FINAL equals the clean run: 0 lost, 0 duplicated, same values
    killed = tables(k, clickhouse_server)
    for kind in KEYS:
        got, want = killed[kind], clean[kind]
        got_keys = [tuple(r[c] for c in KEYS[kind]) for r in got]
        want_keys = [tuple(r[c] for c in KEYS[kind]) for r in want]
        assert len(set(got_keys)) == len(got_keys), f"{kind}: duplicated keys under FINAL"
        lost, extra = set(want_keys) - set(got_keys), set(got_keys) - set(want_keys)
        diff = [(w, g) for w, g in zip(want, got, strict=False) if w != g]
        if lost or extra or diff:
            why = divergence(s, k, clean["equity"], killed["equity"])
            raise AssertionError(
                f"{kind}: {len(lost)} lost, {len(extra)} unexpected, {len(diff)} rows differ "
                f"(e.g. {diff[:1]}); killed at {seen}, restored from {cp['restored_from']}; "
                f"{why}"
            )
    print(
        f"\nclean run {clean_s:.0f} s ({n} rows); killed at {seen}, recovered and finished "
        f"{recovered_s:.0f} s later from {cp['restored_from']}; equity records {emitted} "
        f"(clean {bars}); FINAL orders {len(clean['orders'])}, fills {len(clean['fills'])}, "
        f"equity {len(clean['equity'])} = clean"
    )
