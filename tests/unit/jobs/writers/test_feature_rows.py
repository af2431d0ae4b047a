"""`features` topic rows -> the offline parquet schema (no Feast import, no services)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pyarrow.parquet as pq

from infra.feature_store import COLUMNS, SCHEMA, OfflineFiles, dedupe, to_feature_frame
from infra.settings import Settings
from udfs.indicators import FEATURE_NAMES


def _topic_row(i: int, computed: str, close: float) -> dict[str, object]:
    """A row as the features job serialises it (Flink JSON, ISO-8601 timestamps)."""
    start = 1617321600000 + i * 60_000
    row: dict[str, object] = {
        "feature_key": "BTCUSDT|1m",
        "symbol": "BTCUSDT",
        "timeframe": "1m",
        "window_start_ms": start,
        "window_end_ms": start + 60_000,
        "open": 58800.01,
        "high": 59000,
        "low": "58700.5",
        "close": close,
        "volume": 1.0e-8,
        "vwap": 58850.25,
        "trade_count": 12,
        "features_ready": i > 0,
        "event_time": pd.Timestamp(start + 59_999, unit="ms", tz="UTC").strftime(
            "%Y-%m-%dT%H:%M:%S.%fZ"
        ),
        "computed_at": computed,
    }
    row.update({f: (None if i == 0 else 0.5) for f in FEATURE_NAMES})
    return json.loads(json.dumps(row))


def test_topic_rows_to_offline_schema(tmp_path) -> None:
    rows = [_topic_row(0, "2021-04-02T00:01:00.100Z", 58900.0)]
    rows += [_topic_row(1, "2021-04-02T00:02:00.100Z", 58950.0)]
    df = to_feature_frame(rows)
    assert list(df.columns) == list(COLUMNS)
    assert str(df["event_time"].dtype) == "datetime64[us, UTC]"
    assert df["event_time"].iloc[0] == pd.Timestamp("2021-04-02T00:00:59.999Z")
    assert df["low"].iloc[0] == 58700.5 and df["volume"].iloc[0] == 1e-8
    assert math.isnan(df["rsi_14"].iloc[0]) and df["rsi_14"].iloc[1] == 0.5
    assert df["features_ready"].tolist() == [False, True]

    client = OfflineFiles(Settings(state_dir=tmp_path).feast_offline_dir)
    # the same bar again, recomputed later with another close: the newest computed_at wins
    again = _topic_row(1, "2021-04-02T00:05:00Z", 59000.0)
    client.write(rows)
    client.write([again])
    assert client.write([]) is None
    files = client.files()
    assert len(files) == 2 and all(pq.read_schema(f).equals(SCHEMA) for f in files)
    back = client.read()
    assert back["close"].tolist() == [58900.0, 59000.0]
    assert client.compact() == 2 and len(client.files()) == 1
    pd.testing.assert_frame_equal(client.read(), back)
    assert len(dedupe(pd.concat([df, df]))) == 2
