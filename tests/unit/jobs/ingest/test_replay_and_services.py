from __future__ import annotations

import socket
import time
from pathlib import Path

import pandas as pd
import pytest

from infra.local import RedisServer, ServiceError, free_port
from infra.settings import SHARED_DATA
from jobs.ingest.replay import Pacer, load_trades, repeated_messages


def test_load_freqtrade_trades() -> None:
    df = load_trades(SHARED_DATA / "freqtrade_XRP_ETH-trades.json.gz")
    assert len(df) == 12_477
    assert set(df["symbol"]) == {"XRPETH"} and set(df["side"]) <= {"buy", "sell"}


def test_repeated_messages_shift_time_and_ids() -> None:
    df = pd.DataFrame(
        {
            "ts_ms": [1_700_000_000_000, 1_700_000_030_000],
            "symbol": ["BTCUSDT"] * 2,
            "price": [1.5, 2.25],
            "qty": [0.1, 3.0],
            "side": ["buy", "sell"],
            "trade_id": [5, 6],
            "exchange": ["binance"] * 2,
        }
    )
    msgs = list(repeated_messages(df, 3))
    assert [m["trade_id"] for m in msgs] == [5, 6, 12, 13, 19, 20]
    assert msgs[2]["ts_ms"] - msgs[0]["ts_ms"] == 2 * 3_600_000
    # the last pass keeps the file's times; earlier passes lie before it (never the future)
    assert [m["ts_ms"] for m in msgs[4:]] == [1_700_000_000_000, 1_700_000_030_000]
    assert msgs[0]["ts_ms"] == 1_700_000_000_000 - 2 * 2 * 3_600_000
    assert msgs[1]["price"] == "2.25" and msgs[1]["qty"] == "3"


def test_pacer_real_time_and_gap_compression() -> None:
    p = Pacer(speed=10.0, max_gap_ms=1000)
    t0 = time.monotonic()
    for ts in (0, 1000, 2000, 10_000_000):  # 1 s, 1 s, huge gap capped to 1 s -> 0.3 s at 10x
        p.wait(ts)
    assert 0.25 <= time.monotonic() - t0 < 1.0
    Pacer(speed=None).wait(5)  # max speed never sleeps


def test_local_service_idempotent_and_port_taken(tmp_path: Path) -> None:
    r = RedisServer(port=free_port(), state_dir=tmp_path)
    try:
        assert "started" in r.start()
        assert "already running" in r.start()
        assert r.status().startswith("running")
    finally:
        assert "stopped" in r.stop()
    assert r.status() == "stopped"

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        other = RedisServer(port=taken, state_dir=tmp_path)
        with pytest.raises(ServiceError, match="already in use"):
            other.start()
