"""Shared building blocks for tests that need a real model and a real prediction service.

- :func:`use_bentoml_home`: one temp ``$BENTOML_HOME`` (model store) per test process, set
  before BentoML first reads its configuration (every test module that trains a model shares
  it; model names keep them apart).
- :func:`train_env`: real candles -> features (udfs.indicators, the features job's
  definition) -> Feast offline store -> training set -> walk-forward XGBoost (jobs.ml.train) ->
  the model store; returns an :class:`Env` with the settings and environment a
  ``bentoml serve`` subprocess needs.
- :class:`BentoServer` / :func:`serving`: ``bentoml serve`` in a subprocess, started, checked
  ready and stopped by the one launcher (jobs.ml.serve.start_predictor); it can be stopped and
  started again on the same port.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pydantic import SecretStr

from infra.feature_store import FeatureStoreClient
from infra.local import RedisServer, free_port
from infra.settings import REPO_ROOT, Settings
from jobs.ml.serve import PredictorProcess, predictor_env

SERVICE_TARGET = "service:Predictor"
SERVICE_DIR = REPO_ROOT / "bentos" / "predictor"
_BENTOML_HOME: Path | None = None
# the model-administration token of the test servers (CANDLEFLOW_SERVING_ADMIN_TOKEN)
ADMIN_TOKEN = "test-admin-token-0123456789"


@dataclass
class Env:
    settings: Settings
    client: FeatureStoreClient
    redis: RedisServer
    bentoml_home: Path
    tag: str
    report_dir: Path
    report: dict[str, Any]
    env: dict[str, str]  # the environment of a `bentoml serve` subprocess
    rows: pd.DataFrame | None = None  # the feature rows the model was trained on


def post(
    port: int, route: str, body: Any, raw: bytes | None = None, token: str | None = None
) -> tuple[int, Any]:
    """POST JSON; ``token``: as ``Authorization: Bearer`` (model administration)."""
    data = raw if raw is not None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{route}", data=data, headers=headers, method="POST"
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        text = e.read()
        try:
            return e.code, json.loads(text)
        except ValueError:
            return e.code, text.decode(errors="replace")


def get(port: int, route: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{route}", timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return 0, str(e)


def use_bentoml_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The process's temp ``$BENTOML_HOME``, set on first use (before BentoML reads it)."""
    global _BENTOML_HOME
    if _BENTOML_HOME is None:
        home = tmp_path_factory.mktemp("bentoml")
        os.environ["BENTOML_HOME"] = str(home)  # before the first model store access
        from bentoml._internal.configuration.containers import BentoMLContainer

        assert BentoMLContainer.model_store_dir.get() == str(home / "models"), (
            "the BentoML model store was used before BENTOML_HOME was set"
        )
        _BENTOML_HOME = home
    return _BENTOML_HOME


def train_env(
    tmp: Path,
    home: Path,
    redis: RedisServer,
    candles: pd.DataFrame,
    *,
    model_name: str = "cf_test_model",
    folds: int = 3,
    rounds: int = 40,
) -> Env:
    """Train a model on ``candles`` (1m: ts_ms, symbol, open, high, low, close, volume; each
    symbol's bars consecutive) through Feast into the model store at ``home``."""
    from jobs.ml.dataset import build_dataset, feature_rows_from_candles
    from jobs.ml.train import TrainConfig, train

    s = Settings(
        state_dir=tmp,
        feast_dir=tmp / "feast",
        feast_project=f"p{uuid.uuid4().hex[:10]}",
        redis_host=redis.host,
        redis_port=redis.port,
        model_name=model_name,
        serving_model_poll_s=1.0,
    )
    client = FeatureStoreClient(s)
    client.apply()
    rows = feature_rows_from_candles(candles, "1m")
    client.write_offline(rows)
    t0 = pd.Timestamp(int(candles.ts_ms.min()), unit="ms", tz="UTC")
    t1 = pd.Timestamp(int(candles.ts_ms.max()), unit="ms", tz="UTC") + pd.Timedelta(minutes=1)
    dataset = tmp / "train.parquet"
    build_dataset(s, t0, t1, ["fwd_ret_5"], dataset, client=client)
    res = train(s, dataset, TrainConfig(folds=folds, rounds=rounds, early_stopping=10, nthread=1))
    assert res.tag is not None
    # the settings as CANDLEFLOW_* (state and Feast dirs, project, Redis, model name, poll
    # 1 s), this model store, and the admin token of the test servers
    proc_env = predictor_env(
        s.model_copy(update={"serving_admin_token": SecretStr(ADMIN_TOKEN)}), bentoml_home=home
    )
    return Env(s, client, redis, home, res.tag, res.report_dir, res.report, proc_env, rows)


class BentoServer:
    """``bentoml serve TARGET`` from ``cwd`` through the one launcher
    (jobs.ml.serve.start_predictor: own process group, ready by BentoML's client, the whole
    tree stopped); ``start`` can be called again after ``stop``, on the same port."""

    def __init__(
        self, env: Env, target: str, cwd: Path, name: str, port: int | None = None
    ) -> None:
        self.env = env
        self.target = target
        self.cwd = cwd
        self.name = name
        self.port = port or free_port()
        self.log_path = env.settings.state_dir / f"{name}.log"
        self.process: PredictorProcess | None = None

    def start(self, timeout_s: float = 120) -> float:
        """Start and wait until ready; returns the seconds it took."""
        from jobs.ml.serve import PredictorStartError, start_predictor

        try:
            self.process = start_predictor(
                self.env.env,
                self.log_path,
                port=self.port,
                target=self.target,
                cwd=self.cwd,
                timeout_s=timeout_s,
            )
        except PredictorStartError as e:
            pytest.fail(f"bentoml serve {self.target}: {e}")
        return self.process.started_s

    def stop(self) -> None:
        """SIGTERM the process group, then SIGKILL whatever of its tree is left after 15 s
        (infra.procs.stop_tree: no orphaned worker keeps the port)."""
        if self.process is not None:
            self.process.stop(15)
        self.process = None


@contextlib.contextmanager
def serving(env: Env, target: str, cwd: Path, name: str, port: int | None = None) -> Iterator[int]:
    """`bentoml serve TARGET` (a free port unless given), ready; yields the port, stops the
    server on exit."""
    server = BentoServer(env, target, cwd, name, port)
    server.start()
    try:
        yield server.port
    finally:
        server.stop()
