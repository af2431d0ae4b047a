"""udfs/contract.py: the shared limits and rules, and that their users derive from it."""

from __future__ import annotations

import pytest

from udfs import contract


@pytest.mark.parametrize(
    ("tf", "ms"),
    [("1s", 1_000), ("1m", 60_000), ("15m", 900_000), ("1h", 3_600_000), ("1d", 86_400_000),
     ("1w", 604_800_000)],
)  # fmt: skip
def test_timeframe_ms(tf: str, ms: int) -> None:
    assert contract.timeframe_ms(tf) == ms


@pytest.mark.parametrize("tf", ["", "m", "0m", "1", "1y", "-1m", "1.5m", "\u0661m", " 1m"])
def test_timeframe_ms_rejects(tf: str) -> None:
    with pytest.raises(ValueError, match="unknown timeframe"):
        contract.timeframe_ms(tf)


def test_users_derive_from_the_contract() -> None:
    from jobs.ml import dataset
    from udfs import metrics, predict_client

    assert dataset.timeframe_ms is metrics.timeframe_ms is contract.timeframe_ms
    assert dataset.CLASSES is predict_client.CLASSES is contract.CLASSES
    assert predict_client.MAX_ITEMS == contract.MAX_ITEMS
    assert predict_client._SYMBOL.pattern == contract.SERVING_SYMBOL_PATTERN
    assert predict_client._TIMEFRAME.pattern == contract.SERVING_TIMEFRAME_PATTERN
