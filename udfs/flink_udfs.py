"""Thin PyFlink wrappers around the pure functions in ``udfs.indicators``.

``features`` is a pandas UDAF meant for a bounded OVER window::

    features(`open`, high, low, `close`, volume, vwap)
      OVER (PARTITION BY symbol, timeframe ORDER BY rowtime
            ROWS BETWEEN 99 PRECEDING AND CURRENT ROW)

It returns ``ARRAY<DOUBLE>`` in the order of ``FEATURE_NAMES`` (NULL = not ready). Each
feature reads only its own last ``window`` bars of the frame, so the result equals
``compute_series`` on the same bars (tested bit-exact).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pyflink.table import DataTypes
from pyflink.table.udf import udaf

from udfs.indicators import FEATURE_NAMES, INPUTS, MAX_WINDOW, compute_last

OVER_WINDOW_PRECEDING = MAX_WINDOW - 1


@udaf(result_type=DataTypes.ARRAY(DataTypes.DOUBLE()), func_type="pandas")
def features(
    o: pd.Series, h: pd.Series, lo: pd.Series, c: pd.Series, v: pd.Series, w: pd.Series
) -> list[float | None]:
    cols = (o, h, lo, c, v, w)
    values = compute_last({k: s.to_numpy(np.float64) for k, s in zip(INPUTS, cols, strict=True)})
    # NaN (warm-up not met) travels as NULL: JSON has no NaN
    return [None if np.isnan(values[n]) else values[n] for n in FEATURE_NAMES]
