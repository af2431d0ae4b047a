"""Contracts shared across layers: defined here once, at the bottom of the layers (no
imports), so the service, the jobs, the stores and the tests derive them from one place:
limits, the label's classes, the serving symbol/timeframe rules, timeframes, the price
columns of a candle."""

from __future__ import annotations

# most items in one /score or /predict_batch request (413 above it); the strategy job's
# client splits its calls to fit
MAX_ITEMS = 4096
# largest request body of those endpoints (16 MiB: 4,096 /score items of ~60 features)
MAX_BODY_BYTES = 16 * 1024 * 1024

# a candle's price and volume columns, in the order every store and message holds them
PRICE_COLUMNS = ("open", "high", "low", "close", "volume", "vwap")

# the classes of the model's label, in the order of its probabilities
CLASSES = ("down", "flat", "up")
# a symbol the prediction service accepts (normalised, as the feature rows carry it)
SERVING_SYMBOL_PATTERN = r"^[A-Z0-9]{2,20}$"
# a timeframe the prediction service accepts (1-9999 of s, m, h or d)
SERVING_TIMEFRAME_PATTERN = r"^[1-9][0-9]{0,3}[smhd]$"

_UNIT_MS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}


def timeframe_ms(timeframe: str) -> int:
    """``1m`` -> 60000, ``1h`` -> 3600000, ``1d`` -> 86400000 (units s, m, h, d, w)."""
    n, unit = timeframe[:-1], timeframe[-1:]
    if not n.isascii() or not n.isdigit() or int(n) < 1 or unit not in _UNIT_MS:
        raise ValueError(f"unknown timeframe {timeframe!r} (expected e.g. 1m, 5m, 15m, 1h, 1d)")
    return int(n) * _UNIT_MS[unit]
