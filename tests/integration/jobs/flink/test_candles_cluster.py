"""The same candles job submitted with `flink run -py` to a real standalone cluster
(JobManager + 2 TaskManager processes) gives the same candles as the oracle."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from infra.flink_cluster import FlinkCluster
from infra.kafka import read_all
from infra.local import free_port
from infra.settings import REPO_ROOT
from jobs.ingest.replay import load_trades, to_messages
from tests.conftest import TRADES_PARQUET, make_settings
from tests.integration.jobs.flink.candles_harness import assert_candles_equal, produce_raw
from tests.reference import candles_reference

pytestmark = pytest.mark.integration
JOB = REPO_ROOT / "jobs" / "flink" / "candles.py"


@pytest.fixture(scope="module")
def cluster(state_dir: Path) -> Iterator[FlinkCluster]:
    from infra.settings import Settings

    s = Settings(
        state_dir=state_dir,
        flink_rest_port=free_port(),
        flink_rpc_port=free_port(),
        flink_taskmanagers=2,
        flink_slots_per_tm=1,
        flink_tm_memory="1200m",
    )
    c = FlinkCluster(s)
    c.start()
    yield c
    c.stop()


def test_cluster_two_taskmanagers_identical_candles(cluster, broker, state_dir) -> None:
    ov = cluster.overview()
    assert ov is not None and ov["taskmanagers"] == 2
    assert len(cluster.taskmanager_pids()) == 2  # two separate TaskManager processes

    # two partitions + parallelism 2: each TaskManager runs one source/window pipeline
    s = make_settings(broker, state_dir, topic_partitions=2, parallelism=2)
    trades = list(to_messages(load_trades(TRADES_PARQUET)))
    end = produce_raw(s, trades)
    assert len(end) == 2 and all(v > 0 for v in end.values())
    offsets = ",".join(f"{p}:{o}" for p, o in sorted(end.items()))
    rc = cluster.run_py(JOB, ["--end-offsets", offsets], settings_for_job=s, timeout_s=600)
    assert rc == 0

    jobs = cluster.rest("/jobs/overview")["jobs"]
    assert [j["state"] for j in jobs] == ["FINISHED"]
    detail = cluster.rest(f"/jobs/{jobs[0]['jid']}")
    assert max(v["parallelism"] for v in detail["vertices"]) == 2

    reference = candles_reference(trades)
    dec = lambda b: json.loads(b, parse_float=Decimal)  # noqa: E731
    got = read_all(s.kafka_bootstrap, s.topic_candles, expected=len(reference), deserialize=dec)
    by_key = {(c["symbol"], c["timeframe"], c["window_start_ms"]): c for c in got}
    assert len(by_key) == len(got)
    assert_candles_equal(by_key, reference)
    assert read_all(s.kafka_bootstrap, s.topic_trades_late, idle_timeout_s=2) == []
