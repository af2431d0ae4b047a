"""`candleflow submit`: the dispatcher builds the right `flink run` command line (Flink is
not started: subprocess.run is replaced)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import infra.flink_cluster
from jobs.cli import app
from jobs.cli.common import Target
from jobs.cli.submit import (
    COMPOSE_JOB_SETTINGS,
    IMAGE_PYTHON,
    parse_sets,
    submit_overrides,
)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []

    def fake_run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
        seen.append({"cmd": cmd, "env": kw.get("env") or {}})
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(infra.flink_cluster.subprocess, "run", fake_run)
    monkeypatch.setenv("CANDLEFLOW_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("CANDLEFLOW_JARS_DIR", str(tmp_path / "jars"))
    return seen


def _flink_run(seen: list[dict[str, Any]]) -> dict[str, Any]:
    runs = [c for c in seen if c["cmd"][1].endswith("/bin/flink")]
    assert len(runs) == 1, seen
    return runs[0]


def test_submit_to_remote_jobmanager_with_compose_preset(calls: list[dict[str, Any]]) -> None:
    res = CliRunner().invoke(
        app,
        [
            "submit",
            "features",
            "--target",
            "cluster",
            "--jobmanager",
            "10.1.2.3:8081",
            "--compose",
            "--set",
            "parallelism=4",
            "--detach",
            "--end-offsets",
            "0:157",
        ],
    )
    assert res.exit_code == 0, res.output
    run = _flink_run(calls)
    cmd = run["cmd"]
    assert cmd[2:4] == ["run", "-d"]
    assert cmd[cmd.index("-m") + 1] == "10.1.2.3:8081"
    assert Path(cmd[cmd.index("-py") + 1]).name == "features.py"
    assert cmd[cmd.index("-pyexec") + 1] == IMAGE_PYTHON
    assert cmd[-3:] == ["--end-offsets", "0:157", "--detach"]  # the script returns too
    env = run["env"]
    assert env["CANDLEFLOW_KAFKA_BOOTSTRAP"] == COMPOSE_JOB_SETTINGS["kafka_bootstrap"]
    assert env["CANDLEFLOW_PREDICTOR_URL"] == "http://predictor:3000"
    assert env["CANDLEFLOW_FLINK_PYTHON_EXECUTABLE"] == IMAGE_PYTHON
    assert env["CANDLEFLOW_PARALLELISM"] == "4"
    assert Path(env["FLINK_CONF_DIR"], "config.yaml").is_file()  # written for the client


def test_submit_to_local_cluster_is_candles_run_target_cluster(
    calls: list[dict[str, Any]],
) -> None:
    res = CliRunner().invoke(app, ["submit", "candles", "--target", "cluster"])
    assert res.exit_code == 0, res.output
    cmd = _flink_run(calls)["cmd"]
    assert "-d" not in cmd
    assert cmd[cmd.index("-m") + 1].startswith("127.0.0.1:")
    assert Path(cmd[cmd.index("-py") + 1]).name == "candles.py"


def test_submit_local_runs_the_job_in_process(
    calls: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import jobs.flink.strategy

    got: list[tuple[list[str], Any]] = []
    monkeypatch.setattr(
        jobs.flink.strategy, "main", lambda argv, settings: got.append((argv, settings))
    )
    res = CliRunner().invoke(
        app, ["submit", "strategy", "--set", "CANDLEFLOW_STRATEGY_ID=t1", "--start-offsets", "0:5"]
    )
    assert res.exit_code == 0, res.output
    assert not calls
    (argv, settings), *_ = got
    assert argv == ["--start-offsets", "0:5"] and settings.strategy_id == "t1"


def test_bad_options_are_refused(calls: list[dict[str, Any]]) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["submit", "candles", "-m", "h:1"]).exit_code == 2  # local
    assert runner.invoke(app, ["submit", "candles", "--target", "cluster", "-m", "h"]).exit_code
    assert runner.invoke(app, ["submit", "candles", "--set", "nope=1"]).exit_code == 2
    assert runner.invoke(app, ["submit", "candles", "--set", "strategy_id=a b"]).exit_code == 2
    assert not calls
    with pytest.raises(ValueError):
        parse_sets(["kafka_bootstrap"])
    assert submit_overrides(Target.cluster, "", True, []) == COMPOSE_JOB_SETTINGS


def test_help_explains_it() -> None:
    out = CliRunner().invoke(app, ["submit", "--help"]).output
    assert "--jobmanager" in out and "--compose" in out and "candles" in out
