"""Independent batch computations used as the oracle in tests (pandas + Decimal).

Nothing here imports the code under test's SQL or job modules: candles are recomputed
from raw trades with exact decimal arithmetic, each timeframe directly from trades (not
rolled up), and lateness by simulating the event-time watermark over arrival order.
"""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import pandas as pd

TIMEFRAMES = {"1m": 60_000, "5m": 300_000, "15m": 900_000, "1h": 3_600_000}
CandleKey = tuple[str, str, int]  # symbol, timeframe, window_start_ms


def candles_reference(trades: list[dict[str, Any]]) -> dict[CandleKey, dict[str, Any]]:
    df = pd.DataFrame(trades)
    df["price"] = df["price"].map(Decimal)
    df["qty"] = df["qty"].map(Decimal)
    df["pq"] = df["price"] * df["qty"]
    df["buy_q"] = [
        q if s == "buy" else Decimal(0) for q, s in zip(df["qty"], df["side"], strict=True)
    ]
    df["sell_q"] = [
        q if s == "sell" else Decimal(0) for q, s in zip(df["qty"], df["side"], strict=True)
    ]
    df = df.sort_values(["ts_ms", "trade_id"], kind="stable")
    out: dict[CandleKey, dict[str, Any]] = {}
    for tf, ms in TIMEFRAMES.items():
        df["w"] = df["ts_ms"] - df["ts_ms"] % ms
        for (sym, w), g in df.groupby(["symbol", "w"], sort=False):
            vol = sum(g["qty"], Decimal(0))
            qv = sum(g["pq"], Decimal(0))
            out[(str(sym), tf, int(w))] = {
                "open": g["price"].iloc[0],
                "high": max(g["price"]),
                "low": min(g["price"]),
                "close": g["price"].iloc[-1],
                "volume": vol,
                "quote_volume": qv,
                "vwap": float(qv) / float(vol),
                "trade_count": len(g),
                "buy_volume": sum(g["buy_q"], Decimal(0)),
                "sell_volume": sum(g["sell_q"], Decimal(0)),
                "first_trade_id": int(g["trade_id"].iloc[0]),
                "last_trade_id": int(g["trade_id"].iloc[-1]),
                "window_end_ms": int(w) + ms,
            }
    return out


def late_mask(ts_arrival_order: list[int], delay_ms: int, window_ms: int = 60_000) -> list[bool]:
    """A record is late if its window's last millisecond is <= the watermark before it,
    the watermark being max(ts seen so far) - delay (one watermark per record)."""
    wm: int | None = None
    out = []
    for ts in ts_arrival_order:
        out.append(wm is not None and ts - ts % window_ms + window_ms - 1 <= wm)
        wm = ts - delay_ms if wm is None else max(wm, ts - delay_ms)
    return out


def shuffle_within(
    trades: list[dict[str, Any]], delay_ms: int, seed: int = 7
) -> list[dict[str, Any]]:
    """Reorder by ts + U[0, delay): any trade can arrive after one up to `delay` ms newer,
    yet none can be late (max ts seen before it is < its ts + delay)."""
    rng = random.Random(seed)
    keyed = [(t["ts_ms"] + rng.randrange(delay_ms), i, t) for i, t in enumerate(trades)]
    keyed.sort(key=lambda x: (x[0], x[1]))
    return [t for _, _, t in keyed]


def garbage(template: dict[str, Any], k: int) -> str:
    """A malformed variant of a real trade message (k picks the kind of damage)."""
    import json

    t = dict(template)
    kinds = [
        lambda: "this is not json {",
        lambda: json.dumps([t["ts_ms"], t["symbol"]]),
        lambda: json.dumps({**t, "price": "abc"}),
        lambda: json.dumps({**t, "price": "-5"}),
        lambda: json.dumps({**t, "qty": "0"}),
        lambda: json.dumps({**t, "symbol": "btc/usdt!!"}),
        lambda: json.dumps({**t, "side": "hold"}),
        lambda: json.dumps({k2: v for k2, v in t.items() if k2 != "qty"}),
        lambda: json.dumps({**t, "ts_ms": "yesterday"}),
        lambda: json.dumps({**t, "ts_ms": 12}),
        lambda: json.dumps({**t, "trade_id": "x1"}),
        lambda: "",
    ]
    return kinds[k % len(kinds)]()
