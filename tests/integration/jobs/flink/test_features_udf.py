"""The features UDF over ARRAY_AGG windows (a bounded OVER window) in Flink == the batch
computation, on real 1m candles (two symbols, 300 bars each), compared exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from infra.settings import Settings
from jobs.flink.env import table_env
from tests.conftest import CANDLES_CSV
from udfs.indicators import FEATURE_NAMES, INPUTS, compute_series

pytestmark = pytest.mark.integration


def test_over_window_features_equal_batch(tmp_path: Path) -> None:
    from udfs.flink_udfs import OVER_WINDOW_PRECEDING, features

    df = pd.read_csv(CANDLES_CSV)
    g = df[df.symbol.isin(["BTCUSDT", "SOLUSDT"])].groupby("symbol").head(300).copy()
    g["vwap"] = (g.high + g.low + g.close) / 3  # the 2021 file has no VWAP; a proxy input
    (tmp_path / "csv").mkdir()
    cols = ["ts_ms", "symbol", *INPUTS]
    g[cols].to_csv(tmp_path / "csv" / "c.csv", index=False, header=False)

    t_env = table_env(Settings(state_dir=tmp_path / "state"), "features-udf-test")
    t_env.create_temporary_function("features", features)
    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE c (ts_ms BIGINT, symbol STRING, `open` DOUBLE, high DOUBLE,
          low DOUBLE, `close` DOUBLE, volume DOUBLE, vwap DOUBLE,
          rt AS TO_TIMESTAMP_LTZ(ts_ms, 3), WATERMARK FOR rt AS rt)
        WITH ('connector' = 'filesystem', 'path' = '{tmp_path / "csv"}', 'format' = 'csv')""")
    res = t_env.sql_query(f"""
        SELECT symbol, ts_ms, features(o, h, l, cl, v, w) AS f FROM (
          SELECT symbol, ts_ms, ARRAY_AGG(`open`) OVER x AS o, ARRAY_AGG(high) OVER x AS h,
            ARRAY_AGG(low) OVER x AS l, ARRAY_AGG(`close`) OVER x AS cl,
            ARRAY_AGG(volume) OVER x AS v, ARRAY_AGG(vwap) OVER x AS w
          FROM c
          WINDOW x AS (PARTITION BY symbol ORDER BY rt
            ROWS BETWEEN {OVER_WINDOW_PRECEDING} PRECEDING AND CURRENT ROW))""").to_pandas()
    assert len(res) == 600
    for sym, gg in g.groupby("symbol"):
        want = pd.DataFrame(compute_series({k: gg[k].to_numpy(np.float64) for k in INPUTS}))
        got = pd.DataFrame(
            res[res.symbol == sym].sort_values("ts_ms").f.tolist(), columns=FEATURE_NAMES
        )
        assert got.iloc[-1].notna().all()  # all 30 features ready after 100 bars
        np.testing.assert_array_equal(got.to_numpy(), want.to_numpy())  # exact, NaN == NaN
