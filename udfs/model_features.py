"""The model's features: the Feast feature service ``model_v1``'s features in the order Feast
returns them (a test checks this against the Feast definition; the prediction service checks
it against the registry at start). Derived from the candle columns (udfs/contract.py) and the
indicator list (udfs/indicators.py), so adding an indicator adds it here."""

from __future__ import annotations

from udfs.contract import PRICE_COLUMNS
from udfs.indicators import FEATURE_NAMES

CANDLE_FEATURES: tuple[str, ...] = (*PRICE_COLUMNS, "trade_count")
INDICATOR_FEATURES: tuple[str, ...] = (*FEATURE_NAMES, "features_ready")
FEATURES: tuple[str, ...] = (*CANDLE_FEATURES, *INDICATOR_FEATURES)
