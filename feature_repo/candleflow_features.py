"""Feast definitions of candleflow, read by ``feast apply`` in this folder.

The objects are built in one place, ``infra.feature_store.definitions`` (the Python API
applies the very same objects), from candleflow settings: the offline FileSource path is
``$CANDLEFLOW_FEAST_DIR/offline/features/*.parquet`` and the TTL ``$CANDLEFLOW_FEAST_TTL_S``.

- entities ``symbol`` and ``timeframe`` (join keys of the same names)
- ``features_offline``: FileSource over the parquet part files of `features` rows
  (timestamp field ``event_time`` = the bar's last ms, created timestamp ``computed_at``)
- ``features_push``: PushSource over it (the stream writer pushes online only)
- feature views ``candles`` (OHLCV, vwap, trade_count, bar bounds) and ``indicators``
  (30 TA-Lib features + ``features_ready``), TTL 2 h by default
- feature service ``model_v1``
"""

from infra.feature_store import definitions
from infra.settings import Settings

_defs = definitions(Settings())

symbol = _defs.symbol
timeframe = _defs.timeframe
features_offline = _defs.offline
features_push = _defs.push
candles = _defs.candles
indicators = _defs.indicators
model_v1 = _defs.model_v1
