"""The Feast feature store of candleflow: definitions, config, offline writes, online push.

No pyflink import. One place builds everything Feast needs from :class:`Settings`:

- :func:`definitions` returns the Feast objects (entities ``symbol`` and ``timeframe``, the
  offline ``FileSource`` over a folder of parquet part files, a ``PushSource`` over it, the
  ``candles`` and ``indicators`` feature views and the ``model_v1`` feature service).
  ``feature_repo/candleflow_features.py`` exposes the same objects to the ``feast`` CLI.
- :func:`repo_config` reads ``feature_repo/feature_store.yaml`` and fills its ``${VAR}``
  placeholders from settings (the ``feast`` CLI fills them from the environment instead,
  see :func:`feast_env`), so both read one file.
- :class:`OfflineFiles` is the offline folder of parquet part files (write, read, compact)
  and needs no Feast import (Feast takes ~9 s to import here).
- :class:`FeatureStoreClient` wraps the ``FeatureStore``: ``apply``, ``write_offline``
  (batch parquet appends), ``push_online`` (``PushMode.ONLINE``), ``online_features``,
  ``historical_features`` and ``compact_offline``.

Rows are the ``features`` topic rows of ``sql/flink/features.sql``. Event timestamp is
``event_time`` (the bar's last millisecond, ``window_end_ms - 1``), created timestamp is
``computed_at``. Re-writing a row is harmless: the point-in-time join keeps, per entity
row, the feature row with the latest ``event_time`` and, among equal ones, the latest
``computed_at``; the Redis online store ignores a push whose event time is not newer than
the stored one.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from infra.settings import Settings, settings_env
from udfs.contract import PRICE_COLUMNS
from udfs.indicators import FEATURE_NAMES
from udfs.topics import FEATURES as FEATURES_TOPIC

if TYPE_CHECKING:
    from feast import Entity, FeatureService, FeatureStore, FeatureView, FileSource, PushSource
    from feast.repo_config import RepoConfig

SERVICE = "model_v1"
PUSH_SOURCE = "features_push"
OFFLINE_SOURCE = "features_offline"
CANDLES_VIEW = "candles"
INDICATORS_VIEW = "indicators"
ENTITY_KEYS = ("symbol", "timeframe")
EVENT_TS = "event_time"  # feature rows: the bar's last millisecond
CREATED_TS = "computed_at"  # feature rows: when the features job computed the row
ENTITY_TS = "event_timestamp"  # entity dataframes (Feast's default name)
BAR_COLUMNS = ("window_start_ms", "window_end_ms")
# columns of one offline row, in file order: the `features` topic model (udfs/topics.py)
# without its Kafka key; their Arrow types follow from the fields' kinds
COLUMNS: tuple[str, ...] = tuple(n for n in FEATURES_TOPIC if n != "feature_key")
TS_TYPE = pa.timestamp("us", tz="UTC")
_ARROW_OF_KIND = {
    "ident": pa.string(),
    "epoch_ms": pa.int64(),
    "bar_end_ms": pa.int64(),
    "count": pa.int64(),
    "float": pa.float64(),
    "float_or_null": pa.float64(),
    "flag": pa.bool_(),
    "iso_ms": TS_TYPE,
}
SCHEMA = pa.schema([pa.field(c, _ARROW_OF_KIND[FEATURES_TOPIC[c].kind]) for c in COLUMNS])
YAML_VARS = (
    "CANDLEFLOW_FEAST_PROJECT",
    "CANDLEFLOW_FEAST_DIR",
    "CANDLEFLOW_REDIS_HOST",
    "CANDLEFLOW_REDIS_PORT",
    "CANDLEFLOW_REDIS_AUTH",
)


# ----------------------------------------------------------------------------- config
def feast_env(settings: Settings) -> dict[str, str]:
    """The environment the ``feast`` CLI needs for ``feature_repo`` (resolved settings).

    ``feature_store.yaml`` names these variables; the definitions file reads the same
    settings (``CANDLEFLOW_FEAST_DIR``, ``CANDLEFLOW_FEAST_TTL_S``) through ``Settings``.
    """
    env = settings_env(settings.model_copy(update={"feast_dir": settings.feast_home.resolve()}))
    needed = ("FEAST_PROJECT", "FEAST_DIR", "FEAST_TTL_S", "REDIS_HOST", "REDIS_PORT")
    password = env.get("CANDLEFLOW_REDIS_PASSWORD")
    return {f"CANDLEFLOW_{k}": env[f"CANDLEFLOW_{k}"] for k in needed} | {
        # appended to feature_store.yaml's connection_string (Feast's "host:port,password=")
        "CANDLEFLOW_REDIS_AUTH": f",password={password}" if password else ""
    }


_VAR = re.compile(r"\$\{(\w+)\}")


def render_yaml(text: str, env: dict[str, str]) -> str:
    """``${VAR}`` -> ``env[VAR]``, as Feast's ``os.path.expandvars`` does, but strict."""

    def sub(m: re.Match[str]) -> str:
        if m.group(1) not in env:
            raise KeyError(f"feature_store.yaml needs ${{{m.group(1)}}}; not in {sorted(env)}")
        return env[m.group(1)]

    return _VAR.sub(sub, text)


def repo_config(settings: Settings) -> RepoConfig:
    """``feature_repo/feature_store.yaml`` with its placeholders filled from settings."""
    from feast.repo_config import RepoConfig

    text = (settings.feast_repo / "feature_store.yaml").read_text()
    raw = yaml.safe_load(render_yaml(text, feast_env(settings)))
    config = RepoConfig(**raw)
    config.repo_path = settings.feast_repo
    return config


# ------------------------------------------------------------------------ definitions
@dataclass(frozen=True)
class Definitions:
    symbol: Entity
    timeframe: Entity
    offline: FileSource
    push: PushSource
    candles: FeatureView
    indicators: FeatureView
    model_v1: FeatureService

    def all(self) -> list[Any]:
        return [
            self.symbol,
            self.timeframe,
            self.offline,
            self.push,
            self.candles,
            self.indicators,
            self.model_v1,
        ]


def offline_glob(settings: Settings) -> str:
    """The offline FileSource path: every parquet part file of the folder (duckdb glob)."""
    return str(settings.feast_offline_dir.resolve() / "*.parquet")


def definitions(settings: Settings) -> Definitions:
    """All Feast objects of the repo, built from settings (paths, TTL)."""
    from feast import Entity, FeatureService, FeatureView, Field, FileSource, PushSource
    from feast.data_format import ParquetFormat
    from feast.types import Bool, Float64, Int64, String
    from feast.value_type import ValueType

    symbol = Entity(
        name="symbol",
        join_keys=["symbol"],
        value_type=ValueType.STRING,
        description="instrument, e.g. BTCUSDT",
    )
    timeframe = Entity(
        name="timeframe",
        join_keys=["timeframe"],
        value_type=ValueType.STRING,
        description="candle length: 1m, 5m, 15m, 1h",
    )
    offline = FileSource(
        name=OFFLINE_SOURCE,
        path=offline_glob(settings),
        file_format=ParquetFormat(),
        timestamp_field=EVENT_TS,
        created_timestamp_column=CREATED_TS,
        description="rows of the `features` topic, appended in batches as parquet part files",
    )
    push = PushSource(
        name=PUSH_SOURCE,
        batch_source=offline,
        description="the feature writer pushes `features` rows online (PushMode.ONLINE)",
    )
    # Feast types from the `features` topic model's kinds (udfs/topics.py)
    feast_of_kind = {"ident": String, "epoch_ms": Int64, "bar_end_ms": Int64, "count": Int64}
    feast_of_kind |= {"float": Float64, "float_or_null": Float64, "flag": Bool}

    def fields(names: tuple[str, ...]) -> list[Field]:
        return [Field(name=c, dtype=feast_of_kind[FEATURES_TOPIC[c].kind]) for c in names]

    keys = fields(ENTITY_KEYS)
    ttl = timedelta(seconds=settings.feast_ttl_s)
    candles = FeatureView(
        name=CANDLES_VIEW,
        entities=[symbol, timeframe],
        ttl=ttl,
        schema=keys + fields((*BAR_COLUMNS, *PRICE_COLUMNS, "trade_count")),
        source=push,
        online=True,
        description="the closed candle; window_*_ms are lineage, not model inputs",
    )
    indicators = FeatureView(
        name=INDICATORS_VIEW,
        entities=[symbol, timeframe],
        ttl=ttl,
        schema=keys + fields((*FEATURE_NAMES, "features_ready")),
        source=push,
        online=True,
        description="30 TA-Lib indicators (udfs/indicators.py); null until warm",
    )
    model_v1 = FeatureService(
        name=SERVICE,
        features=[candles[[*PRICE_COLUMNS, "trade_count"]], indicators],
        description="inputs of the first XGBoost model",
    )
    return Definitions(symbol, timeframe, offline, push, candles, indicators, model_v1)


# ------------------------------------------------------------------------- rows
def to_feature_frame(rows: pd.DataFrame | Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Normalise `features` rows (topic JSON dicts or a frame) to the offline schema.

    ``event_time``/``computed_at`` may be ISO strings (Flink JSON), datetimes or missing:
    a missing ``event_time`` is ``window_end_ms - 1`` (what the job writes), a missing
    ``computed_at`` is now. Nulls in feature columns become NaN.
    """
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if df.empty:
        return SCHEMA.empty_table().to_pandas()
    if EVENT_TS not in df:
        df[EVENT_TS] = pd.to_datetime(df["window_end_ms"].astype("int64") - 1, unit="ms")
    if CREATED_TS not in df:
        df[CREATED_TS] = pd.Timestamp.now(tz="UTC")
    for c in (EVENT_TS, CREATED_TS):
        df[c] = pd.to_datetime(df[c], utc=True, format="mixed").astype("datetime64[us, UTC]")
    for c in (*PRICE_COLUMNS, *FEATURE_NAMES):
        df[c] = pd.to_numeric(df[c], errors="coerce").astype(np.float64)
    for c in (*BAR_COLUMNS, "trade_count"):
        df[c] = df[c].astype(np.int64)
    df["features_ready"] = df["features_ready"].fillna(False).astype(bool)
    for k in ENTITY_KEYS:
        df[k] = df[k].astype(str)
    return df.loc[:, list(COLUMNS)].reset_index(drop=True)


class OfflineFiles:
    """The offline store's folder of parquet part files (no Feast import needed).

    Each write is one new file, written to a hidden temp name (not matched by the
    ``*.parquet`` glob) and renamed, so readers never see a partial file. Compaction only
    removes the files it read; a reader that sees the compacted file and an old one at
    the same time gets duplicates, which the point-in-time join collapses anyway.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def files(self) -> list[Path]:
        return sorted(self.folder.glob("*.parquet"))

    def _write(self, df: pd.DataFrame, tag: str) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"part-{time.time_ns()}-{tag}.parquet"
        tmp = self.folder / f".{name}.tmp"
        pq.write_table(pa.Table.from_pandas(df, schema=SCHEMA, preserve_index=False), tmp)
        os.replace(tmp, self.folder / name)
        return self.folder / name

    def write(self, rows: pd.DataFrame | Iterable[dict[str, Any]]) -> Path | None:
        """Append one batch of feature rows as a new part file (None if empty)."""
        df = to_feature_frame(rows)
        return None if df.empty else self._write(df, uuid.uuid4().hex[:8])

    def read(self) -> pd.DataFrame:
        """All rows, one per (symbol, timeframe, event_time): the latest computed_at."""
        files = self.files()
        if not files:
            return to_feature_frame([])
        return dedupe(pq.read_table(files, schema=SCHEMA).to_pandas())

    def compact(self) -> int:
        """Rewrite all part files as one deduplicated file; returns its row count."""
        files = self.files()
        df = self.read()
        if len(files) > 1:
            self._write(df, "compact")
            for f in files:
                f.unlink()
        return len(df)


# ----------------------------------------------------------------------------- client
class FeatureStoreClient:
    """The project's handle on Feast for one settings object (one project, one repo)."""

    def __init__(self, settings: Settings) -> None:
        from feast import FeatureStore

        self.settings = settings
        self.offline = OfflineFiles(settings.feast_offline_dir)
        self.defs = definitions(settings)
        self.store: FeatureStore = FeatureStore(
            repo_path=str(settings.feast_repo), config=repo_config(settings)
        )

    # -- registry ----------------------------------------------------------------------
    def apply(self) -> None:
        """Register the entities, sources, views and service (same as ``feast apply``)."""
        self.settings.feast_home.mkdir(parents=True, exist_ok=True)
        self.settings.feast_offline_dir.mkdir(parents=True, exist_ok=True)
        self.store.apply(self.defs.all())

    # -- offline -----------------------------------------------------------------------
    def offline_files(self) -> list[Path]:
        return self.offline.files()

    def write_offline(self, rows: pd.DataFrame | Iterable[dict[str, Any]]) -> Path | None:
        """Append one batch of feature rows as a new parquet part file (None if empty).

        Re-writing rows already there is harmless for training sets: duplicates of an
        (entity, event_time) collapse to the one with the latest ``computed_at``.
        """
        return self.offline.write(rows)

    def read_offline(self) -> pd.DataFrame:
        return self.offline.read()

    def compact_offline(self) -> int:
        return self.offline.compact()

    def historical_features(
        self, entity_df: pd.DataFrame, features: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Point-in-time join (duckdb): per entity row, the latest feature row with
        ``event_time <= event_timestamp`` and ``event_time >= event_timestamp - TTL``."""
        if not self.offline_files():
            raise FileNotFoundError(
                f"no offline feature files in {self.settings.feast_offline_dir}"
            )
        feats: Any = list(features) if features else self.store.get_feature_service(SERVICE)
        return self.store.get_historical_features(entity_df=entity_df, features=feats).to_df()

    def service_refs(self, name: str = SERVICE) -> list[str]:
        """``view:feature`` references of a feature service."""
        svc = self.store.get_feature_service(name)
        return [
            f"{p.name_to_use()}:{f.name}" for p in svc.feature_view_projections for f in p.features
        ]

    # -- online ------------------------------------------------------------------------
    def push_online(self, rows: pd.DataFrame | Iterable[dict[str, Any]]) -> int:
        """Write feature rows to Redis (``PushMode.ONLINE``); returns rows pushed.

        A row older than (or as old as) what Redis holds for its entity is ignored by the
        online store, so replays and out-of-order batches never move a key backwards.
        """
        from feast.data_source import PushMode

        df = to_feature_frame(rows)
        if df.empty:
            return 0
        self.store.push(PUSH_SOURCE, df, to=PushMode.ONLINE)
        return len(df)

    def online_features(
        self, symbols: Sequence[str], timeframe: str, features: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Latest features per symbol from Redis (all None for an unknown entity)."""
        feats: Any = list(features) if features else self.store.get_feature_service(SERVICE)
        rows = [{"symbol": s, "timeframe": timeframe} for s in symbols]
        return self.store.get_online_features(features=feats, entity_rows=rows).to_df()


def dedupe(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (symbol, timeframe, event_time): the latest computed_at (Feast's rule)."""
    df = df.sort_values([*ENTITY_KEYS, EVENT_TS, CREATED_TS], kind="stable")
    df = df.drop_duplicates([*ENTITY_KEYS, EVENT_TS], keep="last")
    return df.reset_index(drop=True)


def get_feature_store(settings: Settings) -> FeatureStoreClient:
    return FeatureStoreClient(settings)
