from __future__ import annotations

from pathlib import Path

import pytest

from infra.connectors import Endpoints, bounded_offsets_option, render_with
from infra.settings import Settings
from jobs.flink.sqlfile import is_insert, load_statements


def test_render_with_quotes() -> None:
    assert render_with({"a": "x'y", "b": "1"}) == "'a' = 'x''y',\n    'b' = '1'"
    assert bounded_offsets_option({1: 5, 0: 7}) == "partition:0,offset:7;partition:1,offset:5"


def test_candles_sql_loads_for_kafka_and_files(tmp_path: Path) -> None:
    s = Settings(kafka_bootstrap="h:1", watermark_delay_ms=2500)
    stmts = load_statements("candles.sql", Endpoints(s, end_offsets={0: 10}).candles_params())
    inserts = [x for x in stmts if is_insert(x)]
    assert len(inserts) == 3 and len(stmts) == 18
    assert stmts[0].startswith("CREATE TEMPORARY FUNCTION TRADE_CHECK")
    src = stmts[1]
    assert "'scan.bounded.specific-offsets' = 'partition:0,offset:10'" in src
    assert "INTERVAL '2.500' SECOND(3)" in src
    assert '"fields":["ts_ms","symbol","price","qty","side","trade_id","exchange"]' in src
    assert all("${" not in x for x in stmts)

    f = Settings(source_connector="filesystem")
    stmts = load_statements("candles.sql", Endpoints(f, files_dir=tmp_path).candles_params())
    assert "'connector' = 'filesystem'" in stmts[1]
    assert "METADATA" not in stmts[1]


def test_missing_placeholder_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "x.sql"
    p.write_text("SELECT ${nope};")
    with pytest.raises(KeyError, match="nope"):
        load_statements(p, {})


def test_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANDLEFLOW_KAFKA_BOOTSTRAP", "broker:9093")
    monkeypatch.setenv("CANDLEFLOW_WATERMARK_DELAY_MS", "750")
    s = Settings()
    assert (s.kafka_host, s.kafka_port, s.watermark_delay_ms) == ("broker", 9093, 750)


def test_features_sql_uses_its_own_watermark_settings() -> None:
    s = Settings(kafka_bootstrap="h:1", watermark_delay_ms=5000, watermark_emit="on-event")
    stmts = load_statements("features.sql", Endpoints(s, end_offsets={0: 3}).features_params())
    src = stmts[0]
    # candles arrive in event-time order per key: no out-of-orderness by default, and
    # periodic watermarks (one Python bundle per tick, not one per candle)
    assert "INTERVAL '0.000' SECOND(3)" in src
    assert "'scan.watermark.emit.strategy' = 'on-periodic'" in src
    assert "ROWS BETWEEN 99 PRECEDING AND CURRENT ROW" in stmts[1]
    assert all("${" not in x for x in stmts)
    s2 = Settings(features_watermark_delay_ms=1500, features_watermark_emit="on-event")
    src2 = load_statements("features.sql", Endpoints(s2).features_params())[0]
    assert "INTERVAL '1.500' SECOND(3)" in src2
    assert "'scan.watermark.emit.strategy' = 'on-event'" in src2


def test_python_execution_settings_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANDLEFLOW_PYTHON_EXECUTION_MODE", "thread")
    monkeypatch.setenv("CANDLEFLOW_PYTHON_BUNDLE_TIME_MS", "250")
    s = Settings()
    assert (s.python_execution_mode, s.python_bundle_time_ms) == ("thread", 250)
    with pytest.raises(ValueError):
        Settings(python_execution_mode="fork")  # type: ignore[arg-type]


def test_cluster_job_env_leaves_unset_settings_unset() -> None:
    from pathlib import Path

    from infra.settings import Settings, settings_env

    env = settings_env(Settings(strategy_config=Path("/x/strategy.json")))
    assert env["CANDLEFLOW_STRATEGY_CONFIG"] == "/x/strategy.json"
    assert "CANDLEFLOW_PREDICT_MODEL_SCHEDULE" not in env  # None, not the string "None"


def test_checkpoint_config_from_settings(tmp_path) -> None:
    from jobs.flink.env import checkpoint_config

    s = Settings(state_dir=tmp_path, checkpoint_interval_ms=1_500, restart_attempts=7)
    conf = checkpoint_config(s)
    assert conf["execution.checkpointing.interval"] == "1500 ms"
    assert conf["execution.checkpointing.mode"] == "EXACTLY_ONCE"
    assert conf["execution.checkpointing.dir"] == (tmp_path / "flink-checkpoints").as_uri()
    assert conf["execution.checkpointing.savepoint-dir"] == (tmp_path / "flink-savepoints").as_uri()
    assert conf["execution.checkpointing.externalized-checkpoint-retention"] == (
        "RETAIN_ON_CANCELLATION"
    )
    assert conf["restart-strategy.type"] == "fixed-delay"
    assert conf["restart-strategy.fixed-delay.attempts"] == "7"
    assert "execution.state-recovery.path" not in conf
    resumed = checkpoint_config(s, "file:///sp/savepoint-1")
    assert resumed["execution.state-recovery.path"] == "file:///sp/savepoint-1"
    assert checkpoint_config(Settings(checkpoint_interval_ms=0)) == {}  # off


def test_every_job_gets_its_options_from_flink_options(tmp_path) -> None:
    """One options function: the SQL jobs and the strategy job (DataStream) get the same
    checkpointing, Python executable and MiniCluster binds (127.0.0.1)."""
    from jobs.flink.env import checkpoint_config, flink_options
    from jobs.flink.strategy import SCORE_BATCH_ROWS, flink_config

    s = Settings(state_dir=tmp_path, flink_python_executable="/opt/py/bin/python")
    sql_job = flink_options(s, "candles")
    strategy = flink_config(s, "strategy", "file:///sp/1")
    for conf in (sql_job, strategy):
        assert conf["rest.bind-address"] == "127.0.0.1"
        assert conf["jobmanager.bind-host"] == conf["taskmanager.bind-host"] == "127.0.0.1"
        assert conf["python.executable"] == "/opt/py/bin/python"
        assert checkpoint_config(s).items() <= conf.items()
    assert strategy["execution.state-recovery.path"] == "file:///sp/1"
    assert int(strategy["python.fn-execution.arrow.batch.size"]) <= SCORE_BATCH_ROWS
    assert "execution.checkpointing.interval" not in flink_options(s, "x", checkpointing=False)
    with pytest.raises(ValueError, match="checkpointed"):
        flink_options(s, "x", checkpointing=False, restore_path="file:///sp/1")
    assert flink_options(Settings(flink_bind_host="0.0.0.0"), "x")["rest.bind-address"] == (
        "0.0.0.0"
    )


def test_flink_run_from_savepoint_command(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    from infra.flink_cluster import FlinkCluster

    calls: list[list[str]] = []

    def fake_run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_run)
    c = FlinkCluster(Settings(state_dir=tmp_path, flink_rest_port=18999))
    assert (
        c.run_py(tmp_path / "job.py", ["--end-offsets", "0:5"], from_savepoint="file:///sp/1") == 0
    )
    cmd = calls[0]
    assert cmd[2:7] == ["run", "-s", "file:///sp/1", "-m", "127.0.0.1:18999"]
    assert cmd[-2:] == ["--end-offsets", "0:5"]
