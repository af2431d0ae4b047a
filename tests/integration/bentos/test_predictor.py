"""Training + the BentoML prediction service on real services.

Real 2021 Binance 1m candles (3 symbols x 400 bars) -> features (udfs.indicators, the
features job's definition) -> Feast offline store -> training set (build_dataset) ->
walk-forward training (jobs.ml.train) -> BentoML model store (a temp $BENTOML_HOME). The latest
feature row of each symbol is pushed to a real redis-server (Feast online store) with its
event time moved to now, so it is fresh; other entities are made stale, not warm, or are
never written. The service is tested in-process (PredictorCore) and over real HTTP
(a `bentoml serve` subprocess on a free port): predictions equal ``booster.inplace_predict``
on the same Feast online features; refusals are 404/409, bad bodies 400, Redis down 503.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hypothesis
import numpy as np
import pandas as pd
import pytest

from infra.local import RedisServer, free_port
from infra.settings import REPO_ROOT
from tests.conftest import CANDLES_CSV
from tests.integration.bentos.predictor_fixtures import (
    ADMIN_TOKEN,
    Env,
    serving,
    train_env,
    use_bentoml_home,
)
from tests.integration.bentos.predictor_fixtures import get as _get
from tests.integration.bentos.predictor_fixtures import post as _post

pytestmark = pytest.mark.integration
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT")
BARS = 400


def fresh_rows(rows: pd.DataFrame, symbol: str, age_s: float, last: bool = True) -> pd.DataFrame:
    """One feature row of ``symbol`` (its last, warm one or its first, cold one) re-stamped so
    that its bar closed ``age_s`` ago."""
    g = rows[rows.symbol == symbol].sort_values("event_time")
    row = g.iloc[[-1 if last else 0]].copy()
    end_ms = int((time.time() - age_s) * 1000) // 1000 * 1000
    row["window_end_ms"] = end_ms
    row["window_start_ms"] = end_ms - 60_000
    row["event_time"] = pd.to_datetime(end_ms - 1, unit="ms", utc=True)
    row["computed_at"] = pd.Timestamp.now(tz="UTC")
    return row


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("predictor")
    home = use_bentoml_home(tmp_path_factory)
    redis = RedisServer(port=free_port(), state_dir=tmp)  # own server: a test stops it
    redis.start()
    try:
        candles = pd.read_csv(CANDLES_CSV)
        candles = candles[candles.symbol.isin(SYMBOLS)].sort_values("ts_ms")
        candles = candles.groupby("symbol").head(BARS)
        e = train_env(tmp, home, redis, candles, model_name="cf_test_model")
        rows = e.rows
        assert rows is not None
        # online: fresh warm rows for SYMBOLS, a stale one, a cold (not warm) one
        e.client.push_online(pd.concat([fresh_rows(rows, sym, 5) for sym in SYMBOLS]))
        stale = fresh_rows(rows, "BTCUSDT", 3600).assign(symbol="OLDUSDT")
        cold = fresh_rows(rows, "ETHUSDT", 5, last=False).assign(symbol="COLDUSDT")
        e.client.push_online(pd.concat([stale, cold]))
        yield e
    finally:
        redis.stop()


def expected(env: Env, symbols: list[str], tag: str | None = None) -> np.ndarray:
    """The oracle: booster.inplace_predict on the Feast online features of ``symbols``."""
    import bentoml

    from jobs.ml.training_set import matrix
    from udfs.model_features import FEATURES

    booster = bentoml.xgboost.load_model(tag or env.tag)
    df = env.client.online_features(symbols, "1m")
    return np.asarray(booster.inplace_predict(matrix(df, FEATURES)))


# ------------------------------------------------------------------------- training
def test_feature_list_is_the_feature_service(env: Env) -> None:
    from bentos.predictor.core import service_features
    from infra.feature_store import definitions
    from udfs.model_features import FEATURES

    assert service_features(definitions(env.settings).model_v1) == FEATURES


def test_training_report_and_model_metadata(env: Env) -> None:
    import bentoml

    from udfs.model_features import FEATURES

    for name in ("report.json", "report.md", "feature_importance.png", "calibration.png"):
        assert (env.report_dir / name).stat().st_size > 0, name
    assert (env.report_dir / "folds.png").read_bytes()[:4] == b"\x89PNG"
    report = json.loads((env.report_dir / "report.json").read_text())
    assert report["model_tag"] == env.tag
    assert len(report["folds"]) == 3
    prev_end = None
    for f in report["folds"]:
        # expanding window, purged: training ends >= 5 bars before the test block starts
        assert pd.Timestamp(f["train_end"]) < pd.Timestamp(f["test_start"]) - pd.Timedelta(
            minutes=5
        )
        assert prev_end is None or pd.Timestamp(f["test_start"]) > prev_end
        prev_end = pd.Timestamp(f["test_end"])
        for name in ("model", "always_flat", "momentum"):
            assert 0 < f[name]["log_loss"] < 5
            assert 0 <= f[name]["accuracy"] <= 1
        assert f["always_flat"]["hit_rate"] is None
        assert 0 <= f["model"]["hit_rate"] <= 1
    meta = bentoml.models.get(env.tag).info.metadata
    assert meta["features"] == list(FEATURES)
    assert meta["feature_service"] == "model_v1"
    assert meta["classes"] == ["down", "flat", "up"]
    assert set(meta["versions"]) >= {"xgboost-cpu", "feast", "ta-lib", "bentoml"}
    assert meta["training_start"] < meta["training_end"]
    assert "Mean over folds" in (env.report_dir / "report.md").read_text()


def test_walk_forward_splits_never_train_on_the_future() -> None:
    from jobs.ml.splits import walk_forward_splits

    ts = pd.Series(pd.date_range("2021-01-01", periods=100, freq="1min", tz="UTC"))
    splits = walk_forward_splits(ts, 4, pd.Timedelta(minutes=5))
    assert len(splits) == 4
    for k, (tr, te) in enumerate(splits):
        assert ts[tr].max() < ts[te].min() - pd.Timedelta(minutes=5)
        if k:
            assert len(tr) > len(splits[k - 1][0])  # expanding


def test_train_cli_rolling_window(env: Env) -> None:
    """`candleflow train` end to end as a user runs it: rolling walk-forward, report files."""
    out = env.settings.state_dir / "cli-report"
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "candleflow"),
            "train",
            str(env.settings.state_dir / "train.parquet"),
            "--folds",
            "3",
            "--scheme",
            "rolling",
            "--window-blocks",
            "1",
            "--rounds",
            "20",
            "--nthread",
            "1",
            "--no-save",
            "--reports-dir",
            str(out),
        ],
        env=env.env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "momentum" in proc.stderr  # the metrics table (rich console on stderr)
    (report_dir,) = out.iterdir()
    report = json.loads((report_dir / "report.json").read_text())
    assert report["walk_forward"]["scheme"] == "rolling"
    assert report["walk_forward"]["window_blocks"] == 1
    assert len(report["folds"]) == 3
    assert {p.name for p in report_dir.glob("*.png")} >= {"feature_importance.png"}
    bad = subprocess.run(
        [str(Path(sys.executable).parent / "candleflow"), "train", "nope.parquet"],
        env=env.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode != 0 and "Traceback" not in bad.stderr + bad.stdout


# ----------------------------------------------------------------------- in-process
def test_in_process_predictions_equal_inplace_predict(env: Env) -> None:
    from bentos.predictor.core import PredictorCore

    core = PredictorCore(env.settings, env.client)
    out = core.predict(list(SYMBOLS), "1m")
    assert out["model_tag"] == env.tag
    want = expected(env, list(SYMBOLS))
    got = np.array(
        [[p["probabilities"][c] for c in ("down", "flat", "up")] for p in out["predictions"]]
    )
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)
    for p in out["predictions"]:
        assert 0 < p["staleness_s"] < 60
        assert p["event_time"].endswith("Z")


def test_in_process_refusals(env: Env) -> None:
    from bentos.predictor.core import PredictorCore, Refused

    core = PredictorCore(env.settings, env.client)
    cases = {
        "DOGEUSDT": (404, "unknown"),
        "OLDUSDT": (409, "stale"),
        "COLDUSDT": (409, "not_ready"),
    }
    for sym, (status, reason) in cases.items():
        with pytest.raises(Refused) as e:
            core.predict(["BTCUSDT", sym], "1m")
        assert (e.value.status, e.value.reason) == (status, reason), e.value.message
        assert sym in e.value.message
    # a caller may accept older features explicitly
    assert core.predict(["OLDUSDT"], "1m", max_staleness_s=7200)["predictions"]
    with pytest.raises(Refused) as e:
        core.predict(["BTCUSDT"], "5m")  # no 5m rows online
    assert e.value.status == 404
    _, items = core.predict_many([("BTCUSDT", "1m"), ("DOGEUSDT", "1m"), ("OLDUSDT", "1m")])
    assert isinstance(items[0], dict)
    assert [getattr(i, "status", 200) for i in items] == [200, 404, 409]


def score_items(env: Env, n: int = 20) -> tuple[list[dict[str, Any]], np.ndarray]:
    """The last ``n`` warm offline feature rows of each symbol as /score items + the oracle
    (``booster.inplace_predict`` on the same rows)."""
    import bentoml

    from jobs.ml.training_set import matrix
    from udfs.model_features import FEATURES

    rows = env.client.read_offline()
    rows = rows[rows["features_ready"].astype(bool)].groupby("symbol").tail(n)
    items = [
        {
            "symbol": r["symbol"],
            "timeframe": r["timeframe"],
            "bar_end_ms": int(r["window_end_ms"]),
            "features": {f: (None if pd.isna(r[f]) else float(r[f])) for f in FEATURES},
        }
        for r in rows.to_dict("records")
    ]
    booster = bentoml.xgboost.load_model(env.tag)
    return items, np.asarray(booster.inplace_predict(matrix(rows, FEATURES)))


def test_in_process_score_equals_inplace_predict_and_refuses(env: Env) -> None:
    from bentos.predictor.core import PredictorCore, Refused, ScoreItem, knowledge_end_ms

    core = PredictorCore(env.settings, env.client)
    items, want = score_items(env)
    # the training rows end before these bars? then lookahead refuses them all
    end = knowledge_end_ms(core.model)
    assert end is not None
    early = [it for it in items if it["bar_end_ms"] < end]
    out = core.score([ScoreItem(**it) for it in items])
    for it, r, w in zip(items, out, want, strict=True):
        if it["bar_end_ms"] < end:
            assert isinstance(r, Refused) and (r.status, r.reason) == (409, "lookahead")
        else:
            assert isinstance(r, dict), r
            got = [r["probabilities"][c] for c in ("down", "flat", "up")]
            np.testing.assert_allclose(got, w, rtol=0, atol=1e-7)
            assert r["signal"] == pytest.approx(got[2] - got[0])
    assert early, "the fixture's training window must cover some of these bars"
    one = dict(early[0], bar_end_ms=end + 60_000)  # a bar after the training data
    missing = dict(one, features={k: v for k, v in one["features"].items() if k != "rsi_14"})
    cold = dict(one, features={**one["features"], "features_ready": 0.0})
    null = dict(one, features={**one["features"], "close": None})
    unknown = dict(one, model="cf_test_model:nosuchversion")
    res = core.score([ScoreItem(**it) for it in (one, missing, cold, null, unknown)])
    assert isinstance(res[0], dict) and res[0]["model_tag"] == env.tag
    got = [(r.status, r.reason) for r in res[1:] if isinstance(r, Refused)]
    assert got == [
        (400, "missing_features"),
        (409, "not_ready"),
        (409, "not_ready"),
        (404, "unknown_model"),
    ]
    named = core.score([ScoreItem(**dict(one, model=env.tag))])[0]
    assert isinstance(named, dict) and named["probabilities"] == res[0]["probabilities"]


def test_feature_mismatch_fails_loudly_and_reload_keeps_serving(env: Env) -> None:
    import bentoml

    from bentos.predictor.core import FeatureMismatch, PredictorCore
    from jobs.ml.artefact import save_booster

    core = PredictorCore(env.settings, env.client)
    booster = bentoml.xgboost.load_model(env.tag)
    meta = dict(bentoml.models.get(env.tag).info.metadata)
    swapped = list(meta["features"])
    swapped[0], swapped[1] = swapped[1], swapped[0]
    bad = save_booster("cf_bad_model", booster, metadata={**meta, "features": swapped})
    with pytest.raises(FeatureMismatch, match="other order"):
        PredictorCore(env.settings, env.client, tag=str(bad.tag))
    with pytest.raises(FeatureMismatch):
        core.reload(str(bad.tag))
    assert core.model.tag == env.tag  # still serving the good one


# ------------------------------------------------------------------------------ HTTP
@pytest.fixture(scope="module")
def server(env: Env) -> Iterator[int]:
    with serving(env, "service:Predictor", REPO_ROOT / "bentos" / "predictor", "serve") as port:
        yield port


def test_http_predictions_equal_inplace_predict(env: Env, server: int) -> None:
    status, body = _post(server, "/predict", {"symbols": list(SYMBOLS), "timeframe": "1m"})
    assert status == 200, body
    assert body["model_tag"] == env.tag
    assert [p["symbol"] for p in body["predictions"]] == list(SYMBOLS)
    want = expected(env, list(SYMBOLS))
    got = np.array(
        [[p["probabilities"][c] for c in ("down", "flat", "up")] for p in body["predictions"]]
    )
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)
    status, body = _post(server, "/predict", {"symbols": ["ETHUSDT"]})  # default timeframe
    assert status == 200 and body["predictions"][0]["symbol"] == "ETHUSDT"


def test_http_score_equals_inplace_predict(env: Env, server: int) -> None:
    from bentos.predictor.core import PredictorCore, knowledge_end_ms

    end = knowledge_end_ms(PredictorCore(env.settings, env.client).model)
    assert end is not None
    items, want = score_items(env)
    items = [dict(it, bar_end_ms=end + k * 60_000) for k, it in enumerate(items)]
    status, body = _post(server, "/score", {"items": items})
    assert status == 200, body
    got = np.array(
        [[r["probabilities"][c] for c in ("down", "flat", "up")] for r in body["results"]]
    )
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)
    assert {r["model_tag"] for r in body["results"]} == {env.tag}
    early = dict(items[0], bar_end_ms=end - 60_000)
    two = {"items": [early, {**items[0], "model": "x:y"}]}
    status, body = _post(server, "/score", two, token=ADMIN_TOKEN)
    assert status == 200
    assert [r["error"]["reason"] for r in body["results"]] == ["lookahead", "unknown_model"]
    assert "walk-forward" in body["results"][0]["error"]["message"]
    status, body = _post(server, "/score", {"items": []})
    assert status == 400, body


def test_http_batch_endpoint(env: Env, server: int) -> None:
    items = [{"symbol": s} for s in SYMBOLS] + [
        {"symbol": "DOGEUSDT"},
        {"symbol": "OLDUSDT"},
        {"symbol": "OLDUSDT", "max_staleness_s": 7200},
        {"symbol": "COLDUSDT", "timeframe": "1m"},
    ]
    status, body = _post(server, "/predict_batch", {"items": items})
    assert status == 200, body
    assert len(body) == len(items)
    want = expected(env, list(SYMBOLS))
    for i in range(len(SYMBOLS)):
        got = [body[i]["probabilities"][c] for c in ("down", "flat", "up")]
        np.testing.assert_allclose(got, want[i], rtol=0, atol=1e-7)
        assert body[i]["model_tag"] == env.tag
    assert [b.get("error", {}).get("status") for b in body[3:]] == [404, 409, None, 409]
    assert "probabilities" in body[5]


@pytest.mark.parametrize(
    ("route", "payload", "status"),
    [
        ("/predict", {"symbols": ["DOGEUSDT"]}, 404),
        ("/predict", {"symbols": ["BTCUSDT", "DOGEUSDT"], "timeframe": "1m"}, 404),
        ("/predict", {"symbols": ["OLDUSDT"]}, 409),
        ("/predict", {"symbols": ["COLDUSDT"]}, 409),
        ("/predict", {"symbols": ["BTCUSDT"], "timeframe": "1h"}, 404),
        ("/predict", {"symbols": []}, 400),
        ("/predict", {"symbols": "BTCUSDT"}, 400),
        ("/predict", {"symbols": ["btc usdt"]}, 400),
        ("/predict", {"symbols": [None]}, 400),
        ("/predict", {"symbols": ["BTCUSDT"], "timeframe": "forever"}, 400),
        ("/predict", {"symbols": ["BTCUSDT"], "max_staleness_s": -1}, 400),
        ("/predict", {"timeframe": "1m"}, 400),
        ("/predict", [1, 2, 3], 400),
        ("/predict_batch", {"items": [{"symbol": 7}]}, 400),
        ("/predict_batch", {"items": "x"}, 400),
        ("/reload", {"tag": "no_such_model:latest"}, 404),
        ("/reload", {"tag": "bad tag !"}, 400),
        ("/reload", {"tag": "."}, 400),
        ("/reload", {"tag": "x-"}, 400),
    ],
)
def test_http_refusals_and_bad_input(server: int, route: str, payload: Any, status: int) -> None:
    got, body = _post(server, route, payload, token=ADMIN_TOKEN)
    assert got == status, body
    if status != 400:  # ours: {"error", "reason"}; 400 from validation: BentoML's body
        assert body["error"] and body["reason"], body
    else:
        assert "error" in str(body)


def test_http_model_administration_needs_the_token(env: Env, server: int) -> None:
    """/reload and a per-item model in /score need the bearer token (401 without it); an
    item naming a model BentoML cannot parse or does not have fails alone (422/404),
    never the request and never with a 5xx."""
    from bentos.predictor.core import PredictorCore, knowledge_end_ms

    for token in (None, "wrong-token"):
        got, body = _post(server, "/reload", {}, token=token)
        assert got == 401 and body["reason"] == "unauthorized", body
    end = knowledge_end_ms(PredictorCore(env.settings, env.client).model)
    assert end is not None
    items, _ = score_items(env)
    good = dict(items[0], bar_end_ms=end + 60_000)
    named = dict(good, model=env.tag)
    status, body = _post(server, "/score", {"items": [good, named]})
    assert status == 200, body
    assert "probabilities" in body["results"][0]
    assert body["results"][1]["error"]["status"] == 401, body
    bad_tags = [".", "..", "-", "_", "a.", "x-", "nosuchmodel", "nosuchmodel:v1"]
    batch = [good] + [dict(good, model=t) for t in bad_tags]
    status, body = _post(server, "/score", {"items": batch}, token=ADMIN_TOKEN)
    assert status == 200, body
    assert "probabilities" in body["results"][0]
    got = {t: r["error"]["status"] for t, r in zip(bad_tags, body["results"][1:], strict=True)}
    assert set(got.values()) <= {404, 422} and got["nosuchmodel"] == 404, got
    status, body = _post(server, "/score", {"items": [named]}, token=ADMIN_TOKEN)
    assert status == 200 and body["results"][0]["model_tag"] == env.tag, body


def test_http_item_limits_are_413(server: int) -> None:
    from udfs.contract import MAX_ITEMS

    many = [{"symbol": "BTCUSDT"}] * (MAX_ITEMS + 1)
    got, body = _post(server, "/predict_batch", {"items": many})
    assert got == 413 and body["reason"] == "too_many_items", body
    assert f"{MAX_ITEMS + 1:,} items" in body["error"]
    got, body = _post(server, "/predict_batch", {"items": [{"symbol": "BTCUSDT"}] * 200_000})
    assert got == 413, body
    got, body = _post(server, "/predict", {"symbols": ["BTCUSDT"]})  # still serving
    assert got == 200, body


def test_http_malformed_json_is_400(server: int) -> None:
    for raw in (b"{not json", b"", b"\xff\xfe", b'{"symbols": ["BTCUSDT"]'):
        got, body = _post(server, "/predict", None, raw=raw)
        assert 400 <= got < 500, (raw, got, body)


def test_http_metrics_readiness_and_model(env: Env, server: int) -> None:
    status, text = _get(server, "/metrics")
    assert status == 200
    assert "candleflow_predictions_total" in text
    assert "bentoml_service_request" in text
    status, body = _post(server, "/model", {})
    assert status == 200 and body["model_tag"] == env.tag
    assert body["features"][0] == "open"


def test_http_picks_up_a_new_model(env: Env, server: int) -> None:
    """A new version in the store is served without a restart: the watcher (poll 1 s)
    swaps it in; /reload does it at once."""
    import bentoml

    from jobs.ml.artefact import save_booster

    booster = bentoml.xgboost.load_model(env.tag)
    meta = dict(bentoml.models.get(env.tag).info.metadata)
    new = save_booster(env.settings.model_name, booster, metadata=meta)
    status, body = _post(server, "/reload", {}, token=ADMIN_TOKEN)
    assert status == 200, body
    assert body["model_tag"] == str(new.tag)
    status, body = _post(server, "/predict", {"symbols": ["BTCUSDT"]})
    assert status == 200 and body["model_tag"] == str(new.tag)
    newer = save_booster(env.settings.model_name, booster, metadata=meta)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        status, body = _post(server, "/predict", {"symbols": ["BTCUSDT"]})
        if body["model_tag"] == str(newer.tag):
            break
        time.sleep(0.3)
    assert body["model_tag"] == str(newer.tag), "the watcher did not pick up the new model"


@pytest.fixture(scope="module")
def api_schema(server: int) -> Any:
    import schemathesis

    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{server}/docs.json")
    return schema.include(path_regex="^/(predict|predict_batch|reload|model)$")


def test_http_schema_fuzzing_finds_no_5xx(api_schema: Any, server: int) -> None:
    """Schemathesis cases from the service's OpenAPI (/docs.json), positive and negative
    (schema-violating) modes, against the served API: no input gives a 5xx. Requests are
    sent with `requests` directly: schemathesis' own transport trips over urllib3-future
    (installed in this venv by a dependency)."""
    import requests
    import schemathesis

    base = f"http://127.0.0.1:{server}"
    ops = [r.ok() for r in api_schema.get_all_operations()]
    assert {op.path for op in ops} == {"/predict", "/predict_batch", "/reload", "/model"}
    seen: list[int] = []
    for op, mode in itertools.product(ops, list(schemathesis.GenerationMode)):

        @hypothesis.given(case=op.as_strategy(generation_mode=mode))
        @hypothesis.settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=list(hypothesis.HealthCheck),
            phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
            database=None,
        )
        def run(case: Any) -> None:
            kwargs = case.as_transport_kwargs(base_url=base)
            response = requests.request(**{**kwargs, "timeout": 30})
            seen.append(response.status_code)
            assert response.status_code < 500, (case.path, case.body, response.text[:500])

        run()
    assert len(seen) >= 80 and any(400 <= c < 500 for c in seen), seen


def test_built_bento_serves_the_same_predictions(env: Env) -> None:
    """`bentoml build` (bentofile.yaml, from the repo root) -> `bentoml serve NAME:VERSION`
    runs the bento's own copy of the code and answers like the source tree."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bentoml",
            "build",
            "-f",
            "bentos/predictor/bentofile.yaml",
            ".",
            "--output",
            "tag",
        ],
        cwd=REPO_ROOT,
        env=env.env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    tag = out.stdout.strip().splitlines()[-1].removeprefix("__tag__:")
    name, version = tag.split(":")
    src = env.bentoml_home / "bentos" / name / version / "src"
    for f in (
        "bentos/predictor/service.py",
        "infra/settings.py",
        "feature_repo/feature_store.yaml",
    ):
        assert (src / f).is_file(), f
    with serving(env, tag, env.settings.state_dir, "serve-bento") as port:
        status, body = _post(port, "/predict", {"symbols": list(SYMBOLS)})
        assert status == 200, body
        got = np.array(
            [[p["probabilities"][c] for c in ("down", "flat", "up")] for p in body["predictions"]]
        )
        np.testing.assert_allclose(got, expected(env, list(SYMBOLS), body["model_tag"]), atol=1e-7)
        assert _post(port, "/predict", {"symbols": ["DOGEUSDT"]})[0] == 404


def test_http_503_when_redis_is_down(env: Env, server: int) -> None:
    """Last: stops the module's Redis, then starts it again."""
    from bentos.predictor.core import PredictorCore, Unavailable

    core = PredictorCore(env.settings, env.client)
    env.redis.stop()
    try:
        status, body = _post(server, "/predict", {"symbols": ["BTCUSDT"]})
        assert status == 503, body
        assert "Redis" in body["error"]
        assert body["reason"] == "unavailable"
        # batchable endpoint: 503, but BentoML replaces a raised 5xx's message
        status, body = _post(server, "/predict_batch", {"items": [{"symbol": "BTCUSDT"}]})
        assert status == 503, body
        assert _get(server, "/readyz")[0] == 503
        with pytest.raises(Unavailable):
            core.predict(["BTCUSDT"], "1m")
    finally:
        env.redis.start()
    deadline = time.monotonic() + 10
    while _get(server, "/readyz")[0] != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _get(server, "/readyz")[0] == 200
    # the restarted Redis is empty (no persistence): known entity now unknown, not 5xx
    status, body = _post(server, "/predict", {"symbols": ["BTCUSDT"]})
    assert status == 404, body
