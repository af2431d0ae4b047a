"""Feast feature store on real services: a real redis-server (session fixture), duckdb
offline store over parquet part files, the real `feast` CLI. Feature rows are computed with
udfs.indicators.compute_series from real 2021 Binance 1m candles (and 5m candles resampled
from them), exactly as the features job writes them.

Oracles are independent pandas computations: merge_asof (backward, by symbol+timeframe,
tolerance = TTL) for the point-in-time join, a complete time grid + shift for the labels.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from infra.feature_store import (
    EVENT_TS,
    PRICE_COLUMNS,
    FeatureStoreClient,
    dedupe,
    feast_env,
    to_feature_frame,
)
from infra.local import RedisServer
from infra.settings import REPO_ROOT, Settings
from jobs.ml.dataset import build_dataset, parse_labels, timeframe_ms
from tests.conftest import CANDLES_CSV
from udfs.indicators import FEATURE_NAMES, INPUTS, compute_series

pytestmark = pytest.mark.integration
BARS = 300  # 1m bars per symbol (5 h)
TTL_S = 600  # short TTL in tests so that gaps longer than it give nulls
GAP = ("ETHUSDT", 120, 150)  # 30 bars of ETHUSDT removed: a gap longer than the TTL
FEATURES = [*PRICE_COLUMNS, "trade_count", *FEATURE_NAMES, "features_ready"]


def _with_features(candles: pd.DataFrame, timeframe: str) -> pd.DataFrame:
    """Feature rows as the Flink features job writes them (one series per symbol)."""
    out = []
    step = timeframe_ms(timeframe)
    for _, g in candles.groupby("symbol"):
        g = g.sort_values("ts_ms").reset_index(drop=True)
        f = pd.DataFrame(compute_series({k: g[k].to_numpy(np.float64) for k in INPUTS}))
        rows = pd.concat([g, f], axis=1)
        rows["timeframe"] = timeframe
        rows["window_start_ms"] = g.ts_ms
        rows["window_end_ms"] = g.ts_ms + step
        rows["features_ready"] = f.notna().all(axis=1)
        rows["event_time"] = pd.to_datetime(rows.window_end_ms - 1, unit="ms", utc=True)
        # the job computes a row a little after the bar closed
        rows["computed_at"] = rows.event_time + pd.Timedelta(milliseconds=250)
        out.append(rows)
    return pd.concat(out, ignore_index=True)


@pytest.fixture(scope="module")
def feature_rows() -> pd.DataFrame:
    df = pd.read_csv(CANDLES_CSV)
    df = df.sort_values(["ts_ms", "symbol"]).groupby("symbol").head(BARS)
    df["vwap"] = (df.high + df.low + df.close) / 3  # the 2021 file has no VWAP; a proxy
    df["trade_count"] = 1
    sym, lo, hi = GAP
    idx = df[df.symbol == sym].sort_values("ts_ms").index[lo:hi]
    df = df.drop(idx)
    m1 = _with_features(df, "1m")
    # 5m candles of two symbols, resampled from the 1m bars
    sub = df[df.symbol.isin(["BTCUSDT", "SOLUSDT"])].copy()
    sub["ts_ms"] = sub.ts_ms // 300_000 * 300_000
    m5 = (
        sub.sort_values("ts_ms")
        .groupby(["symbol", "ts_ms"], as_index=False)
        .agg(
            open=("open", "first"),
            high=("high", "max"),
            low=("low", "min"),
            close=("close", "last"),
            volume=("volume", "sum"),
            trade_count=("trade_count", "sum"),
        )
    )
    m5["vwap"] = (m5.high + m5.low + m5.close) / 3
    rows = pd.concat([m1, _with_features(m5, "5m")], ignore_index=True)
    return to_feature_frame(rows)


@pytest.fixture
def fs(redis_server: RedisServer, tmp_path: Path) -> FeatureStoreClient:
    """A Feast store isolated per test: own project (Redis key prefix), registry, files."""
    s = Settings(
        state_dir=tmp_path,
        feast_dir=tmp_path / "feast",
        feast_project=f"t{uuid.uuid4().hex[:10]}",
        feast_ttl_s=TTL_S,
        redis_host=redis_server.host,
        redis_port=redis_server.port,
    )
    client = FeatureStoreClient(s)
    client.apply()
    return client


def _oracle_asof(offline: pd.DataFrame, entity: pd.DataFrame, ttl_s: int) -> pd.DataFrame:
    """Independent point-in-time join: pandas merge_asof, backward, tolerance = TTL."""
    right = dedupe(offline).sort_values(EVENT_TS)
    left = entity.reset_index().sort_values("event_timestamp")
    got = pd.merge_asof(
        left,
        right[["symbol", "timeframe", EVENT_TS, *FEATURES]],
        left_on="event_timestamp",
        right_on=EVENT_TS,
        by=["symbol", "timeframe"],
        direction="backward",
        tolerance=pd.Timedelta(seconds=ttl_s),
        allow_exact_matches=True,
    )
    return got.set_index("index").sort_index()


def _entities(rows: pd.DataFrame) -> pd.DataFrame:
    """Entity timestamps on, between, before and after the bars, and inside the gap."""
    parts = []
    for (sym, tf), g in rows.groupby(["symbol", "timeframe"]):
        ts = g[EVENT_TS].sort_values()
        first, last = ts.iloc[0], ts.iloc[-1]
        picks = list(ts.iloc[::9]) + [t + pd.Timedelta(seconds=17.5) for t in ts.iloc[3::11]]
        picks += [
            first - pd.Timedelta(minutes=1),  # before the first bar: nothing yet
            first - pd.Timedelta(milliseconds=1),
            first,
            last + pd.Timedelta(seconds=TTL_S - 1),  # still within the TTL
            last + pd.Timedelta(seconds=TTL_S + 1),  # expired
        ]
        parts.append(pd.DataFrame({"symbol": sym, "timeframe": tf, "event_timestamp": picks}))
    # inside the ETHUSDT gap: early (within TTL of the last bar before it) and late
    eth = rows[(rows.symbol == GAP[0]) & (rows.timeframe == "1m")][EVENT_TS].sort_values()
    before_gap = eth.iloc[GAP[1] - 1]
    gap = [before_gap + pd.Timedelta(minutes=m, seconds=30) for m in (1, 5, 9, 11, 20, 29)]
    parts.append(pd.DataFrame({"symbol": GAP[0], "timeframe": "1m", "event_timestamp": gap}))
    ent = pd.concat(parts, ignore_index=True)
    ent["event_timestamp"] = ent["event_timestamp"].astype("datetime64[us, UTC]")
    return ent.drop_duplicates().reset_index(drop=True)


def _assert_frames_equal(got: pd.DataFrame, want: pd.DataFrame, cols: list[str]) -> None:
    for c in cols:
        g = got[c].astype("float64").to_numpy()
        w = want[c].astype("float64").to_numpy()
        np.testing.assert_array_equal(g, w, err_msg=c)  # NaN == NaN here; else exact bits


def test_historical_features_equal_merge_asof(fs: FeatureStoreClient, feature_rows) -> None:
    # two batches that overlap (re-written rows) plus a later correction of some rows with
    # a newer computed_at: Feast must keep exactly the newest computed_at per bar
    n = len(feature_rows)
    fs.write_offline(feature_rows.iloc[: n // 2 + 50])
    fs.write_offline(feature_rows.iloc[n // 2 :])
    fix = feature_rows.iloc[::13].copy()
    fix["rsi_14"] = fix["rsi_14"] + 1.0
    fix["close"] = fix["close"] * 1.001
    fix["computed_at"] = fix["computed_at"] + pd.Timedelta(minutes=5)
    stale = feature_rows.iloc[::17].copy()
    stale["close"] = -1.0
    stale["computed_at"] = stale["computed_at"] - pd.Timedelta(minutes=5)
    fs.write_offline(fix)
    fs.write_offline(stale)
    assert len(fs.offline_files()) == 4
    offline = pd.concat([feature_rows, feature_rows, fix, stale], ignore_index=True)

    entity = _entities(feature_rows)
    got = fs.historical_features(entity)
    assert len(got) == len(entity)
    got = got.merge(entity.reset_index(), on=["symbol", "timeframe", "event_timestamp"])
    got = got.set_index("index").sort_index()
    want = _oracle_asof(offline, entity, TTL_S)
    assert got.index.tolist() == want.index.tolist()
    _assert_frames_equal(got, want, [c for c in FEATURES if c != "features_ready"])
    ready_got = got["features_ready"].astype("boolean").fillna(False).astype(bool)
    ready_want = want["features_ready"].astype("boolean").fillna(False).astype(bool)
    assert ready_got.tolist() == ready_want.tolist()

    # the cases the entity timestamps were chosen for really occur
    null_rows = want["close"].isna()
    assert null_rows.sum() >= 2 * 7 + 4  # before-first + expired per series, gap
    assert (got.loc[~null_rows, "close"] > 0).all()  # never the stale (older) rewrite
    fixed = got["close"].isin(fix["close"]).sum()
    assert fixed > 0  # some entity rows hit corrected bars and got the newer values
    assert got.loc[~null_rows, "sma_50"].notna().any() and got["sma_50"].isna().any()

    # compaction keeps what the point-in-time join returns
    assert fs.compact_offline() == len(feature_rows)
    assert len(fs.offline_files()) == 1
    again = fs.historical_features(entity)
    again = again.merge(entity.reset_index(), on=["symbol", "timeframe", "event_timestamp"])
    _assert_frames_equal(again.set_index("index").sort_index(), want, ["close", "rsi_14"])


def _grid_labels(rows: pd.DataFrame, n: int) -> pd.DataFrame:
    """Independent labels: put each series on its complete time grid, shift by -n bars."""
    out = []
    for (sym, tf), g in rows.groupby(["symbol", "timeframe"]):
        s = g.set_index(EVENT_TS)["close"].sort_index()
        grid = s.asfreq(pd.Timedelta(milliseconds=timeframe_ms(tf)))  # gaps -> NaN
        ret = np.log(grid.shift(-n) / grid).reindex(s.index)
        out.append(pd.DataFrame({"symbol": sym, "timeframe": tf, "ret": ret}).reset_index())
    return pd.concat(out, ignore_index=True).rename(columns={EVENT_TS: "event_timestamp"})


def test_dataset_point_in_time_and_labels(fs: FeatureStoreClient, feature_rows, tmp_path) -> None:
    fs.write_offline(feature_rows)
    t0 = feature_rows[EVENT_TS].min()
    start, end = t0 + pd.Timedelta(minutes=30), t0 + pd.Timedelta(hours=4)
    out = tmp_path / "train.parquet"
    calls: list[tuple[int, int]] = []
    res = build_dataset(
        fs.settings,
        start,
        end,
        ["fwd_ret_1,fwd_ret_5", "fwd_ret_15"],
        out,
        chunk_rows=400,
        on_progress=lambda d, t: calls.append((d, t)),
        client=fs,
    )
    ds = pd.read_parquet(out)
    assert res.rows == len(ds) > 0 and calls[-1][0] == calls[-1][1] and len(calls) > 1

    # no feature value comes from a bar that ends after the entity timestamp
    ent_ms = ds["event_timestamp"].astype("int64") // 1000
    assert (ds["window_end_ms"] - 1 <= ent_ms).all()
    assert (ds["window_end_ms"] - 1 == ent_ms).all()  # entity = the bar's own close
    assert ds["event_timestamp"].between(start, end, inclusive="left").all()

    # features are exactly the offline row of that bar
    bars = feature_rows.rename(columns={EVENT_TS: "event_timestamp"})
    joined = ds.merge(bars, on=["symbol", "timeframe", "event_timestamp"], suffixes=("", "_w"))
    assert len(joined) == len(ds)
    for c in ["close", "rsi_14", "macd_12_26_9_hist", "volume_z_20"]:
        np.testing.assert_array_equal(joined[c].to_numpy(), joined[f"{c}_w"].to_numpy(), c)

    # labels equal the independent computation; unknown ones (end of data, gap) dropped
    in_range = bars[bars.event_timestamp.between(start, end, inclusive="left")]
    keys = ["symbol", "timeframe", "event_timestamp"]
    known = in_range[keys].copy()
    for n in (1, 5, 15):
        lab = _grid_labels(feature_rows, n).rename(columns={"ret": f"want_{n}"})
        known = known.merge(lab, on=keys)
        m = ds.merge(lab, on=keys)
        np.testing.assert_allclose(m[f"fwd_ret_{n}"], m[f"want_{n}"], rtol=0, atol=1e-15)
        thr = 0.001
        want_cls = np.where(
            m[f"want_{n}"] > thr, "up", np.where(m[f"want_{n}"] < -thr, "down", "flat")
        )
        assert m[f"fwd_ret_{n}_class"].tolist() == want_cls.tolist()
        assert sum(res.balance[f"fwd_ret_{n}"].values()) == len(ds)
    complete = known[[f"want_{n}" for n in (1, 5, 15)]].notna().all(axis=1)
    assert len(ds) == int(complete.sum())
    assert res.dropped_unknown_label == int((~complete).sum()) > 0
    assert set(ds["timeframe"]) == {"1m", "5m"}

    # changing anything after T (new values, newer computed_at, extra future bars) leaves
    # every feature of every row with entity timestamp <= T unchanged
    cut = start + pd.Timedelta(hours=2)
    future = feature_rows[feature_rows[EVENT_TS] > cut].copy()
    future[FEATURE_NAMES] = future[FEATURE_NAMES] * 2.0 + 1.0
    future["close"] = future["close"] * 3.0
    future["computed_at"] = future["computed_at"] + pd.Timedelta(hours=1)
    fs.write_offline(future)
    res2 = build_dataset(fs.settings, start, end, ["fwd_ret_1"], tmp_path / "b.parquet", client=fs)
    ds2 = pd.read_parquet(res2.path)
    before = ds[ds.event_timestamp <= cut].set_index(keys)
    after = ds2[ds2.event_timestamp <= cut].set_index(keys).loc[before.index]
    feat_cols = [*PRICE_COLUMNS, *FEATURE_NAMES]
    np.testing.assert_array_equal(after[feat_cols].to_numpy(), before[feat_cols].to_numpy())
    later = ds2[ds2.event_timestamp > cut].merge(bars, on=keys, suffixes=("", "_w"))
    assert len(later) and (later["close"] == later["close_w"] * 3.0).all()  # really changed


def test_labels_parse_and_cli(fs: FeatureStoreClient, feature_rows, tmp_path, monkeypatch) -> None:
    assert parse_labels(["fwd_ret_15", "fwd_ret_5,fwd_ret_15"]) == [5, 15]
    with pytest.raises(ValueError):
        parse_labels(["ret_5"])
    from typer.testing import CliRunner

    from infra.settings import get_settings
    from jobs.cli import app

    fs.write_offline(feature_rows)
    for k, v in feast_env(fs.settings).items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    try:
        out = tmp_path / "cli.parquet"
        t0 = feature_rows[EVENT_TS].min().isoformat()
        args = ["dataset", "build", "--start", t0, "--end", "2021-04-02T03:00:00"]
        args += ["--label", "fwd_ret_5", "--timeframe", "1m", "--symbols", "BTCUSDT,XRPUSDT"]
        r = CliRunner().invoke(app, [*args, "--out", str(out)])
        assert r.exit_code == 0, r.output
        ds = pd.read_parquet(out)
        assert set(ds.symbol) == {"BTCUSDT", "XRPUSDT"} and set(ds.timeframe) == {"1m"}
        assert len(ds) == 2 * 180  # bars 00:00-02:59; their labels are known (300 bars)
        assert {"fwd_ret_5", "fwd_ret_5_class", "rsi_14", "window_end_ms"} <= set(ds.columns)
    finally:
        get_settings.cache_clear()


def test_push_online_returns_last_row_per_symbol(fs: FeatureStoreClient, feature_rows) -> None:
    m1 = feature_rows[feature_rows.timeframe == "1m"]
    shuffled = m1.sample(frac=1.0, random_state=7)  # out of order, in 6 micro-batches
    for i in range(0, len(shuffled), len(shuffled) // 6 + 1):
        fs.push_online(shuffled.iloc[i : i + len(shuffled) // 6 + 1])
    fs.push_online(m1.iloc[:40])  # a replay of old rows must not move keys backwards
    symbols = sorted(m1.symbol.unique())
    got = fs.online_features([*symbols, "NOSUCH"], "1m").set_index("symbol")
    want = dedupe(m1).groupby("symbol").tail(1).set_index("symbol").loc[symbols]
    _assert_frames_equal(got.loc[symbols], want, [c for c in FEATURES if c != "features_ready"])
    assert got.loc[symbols, "features_ready"].astype(bool).tolist() == want.features_ready.tolist()
    assert got.loc["NOSUCH", [*PRICE_COLUMNS, *FEATURE_NAMES]].isna().all()  # unknown entity
    m5 = fs.online_features(["BTCUSDT"], "5m")
    assert m5["close"].isna().all()  # 5m rows were never pushed


def _feast(repo: Path, env: dict[str, str], *args: str) -> str:
    exe = Path(sys.executable).parent / "feast"
    r = subprocess.run(
        [str(exe), "-c", str(repo), *args],
        env={**os.environ, **env},
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert r.returncode == 0, f"feast {args}: {r.stdout}\n{r.stderr}"
    return r.stdout + r.stderr


def test_feast_cli_apply_materialize(redis_server: RedisServer, feature_rows, tmp_path) -> None:
    s = Settings(
        state_dir=tmp_path,
        feast_dir=tmp_path / "feast",
        feast_project=f"cli{uuid.uuid4().hex[:8]}",
        feast_ttl_s=TTL_S,
        redis_host=redis_server.host,
        redis_port=redis_server.port,
    )
    repo = tmp_path / "feature_repo"
    repo.mkdir()
    for f in ("feature_store.yaml", "candleflow_features.py"):
        shutil.copy(REPO_ROOT / "feature_repo" / f, repo / f)
    env = feast_env(s)
    m1 = feature_rows[feature_rows.timeframe == "1m"]
    t0 = m1[EVENT_TS].min()
    mid, end = t0 + pd.Timedelta(hours=2), t0 + pd.Timedelta(hours=4)
    client = FeatureStoreClient(s.model_copy(update={"feast_repo": repo}))
    client.write_offline(m1)

    out = _feast(repo, env, "apply")
    assert "Deploying infrastructure for candles" in out and "indicators" in out
    client.store.refresh_registry()
    assert [x.name for x in client.store.list_feature_services()] == ["model_v1"]
    assert sorted(x.name for x in client.store.list_feature_views()) == ["candles", "indicators"]
    _feast(repo, env, "materialize", t0.isoformat(), mid.isoformat())

    def latest_before(ts: pd.Timestamp) -> pd.DataFrame:  # Feast: [start, end] inclusive
        rows = m1[m1[EVENT_TS] <= ts]
        return dedupe(rows).groupby("symbol").tail(1).set_index("symbol").sort_index()

    symbols = sorted(m1.symbol.unique())
    got = client.online_features(symbols, "1m").set_index("symbol").sort_index()
    _assert_frames_equal(got, latest_before(mid), ["close", "rsi_14", "trade_count"])

    _feast(repo, env, "materialize-incremental", end.isoformat())
    got = client.online_features(symbols, "1m").set_index("symbol").sort_index()
    _assert_frames_equal(got, latest_before(end), ["close", "rsi_14", "trade_count"])
    assert (got["close"] != latest_before(mid)["close"]).all()
