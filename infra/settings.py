"""One typed settings object for the whole project.

Every value can be overridden from the environment (``CANDLEFLOW_<NAME>``, e.g.
``CANDLEFLOW_KAFKA_BOOTSTRAP=broker:9092``) or from a ``.env`` file in the working
directory. Nothing else in the code base hard-codes a host, port, path or topic.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CANDLEFLOW_", env_file=".env", extra="ignore", frozen=False
    )

    # --- where local state, logs and downloaded jars live -------------------------------
    state_dir: Path = Field(REPO_ROOT / ".state", description="local services' data + logs")
    jars_dir: Path = Field(REPO_ROOT / ".jars", description="Flink connector jars")
    data_dir: Path = Field(SHARED_DATA, description="real market data (read-only)")

    # --- Kafka-protocol broker ----------------------------------------------------------
    kafka_bootstrap: str = "127.0.0.1:19092"
    topic_trades: str = "trades"
    topic_trades_dlq: str = "trades_dlq"
    topic_trades_late: str = "trades_late"
    topic_candles: str = "candles"
    topic_features: str = "features"
    topic_partitions: int = 1
    # how long a fetch may wait for data (Flink Kafka sources and the writers' consumers);
    # Kafka answers as soon as data arrives, but Tansu holds the fetch (Kafka's 500 ms
    # default: +250 ms mean latency per hop in the Flink source, ~115 ms measured with
    # librdkafka); 50 ms costs ~20 idle fetches/s
    kafka_fetch_max_wait_ms: int = Field(50, ge=0, le=10_000)

    # --- Redis --------------------------------------------------------------------------
    redis_host: str = "127.0.0.1"
    redis_port: int = 16379
    # set: the local redis-server requires it (AUTH) and every client sends it
    redis_password: SecretStr | None = Field(None, description="Redis AUTH password")

    # --- ClickHouse analytics store (infra/clickhouse/) -----------------------------------
    # clickhouse://[user[:password]@]host:port/database (a server) or chdb://PATH (embedded
    # chDB); empty = chdb://<state_dir>/chdb. `candleflow up --clickhouse` starts a local
    # 18.16 server on the two ports below.
    clickhouse_url: str = ""
    clickhouse_port: int = 19000
    clickhouse_http_port: int = 18123
    # set: the local server's `default` user requires it (put it in CLICKHOUSE_URL too)
    clickhouse_password: SecretStr | None = Field(None, description="local server password")

    # --- Grafana (`candleflow grafana provision`, infra/grafana/) --------------------------
    # user + password (basic auth) or a service-account token; the two datasource URLs are
    # what the Grafana server reaches (compose service names), not this machine
    grafana_url: str = Field("http://127.0.0.1:3001", description="Grafana base URL")
    grafana_user: str = Field("admin", description="Grafana user (basic auth)")
    grafana_password: SecretStr = Field(SecretStr("admin"), description="Grafana password")
    grafana_token: SecretStr | None = Field(None, description="token; overrides user/password")
    grafana_clickhouse_url: str = "clickhouse://default@clickhouse:9000/default"
    grafana_prometheus_url: str = "http://prometheus:9090"

    # --- Feast feature store (feature_repo/, infra/feature_store.py) ---------------------
    feast_repo: Path = Field(REPO_ROOT / "feature_repo", description="Feast repo folder")
    feast_project: str = Field("candleflow", description="Feast project (Redis key prefix)")
    feast_dir: Path | None = Field(None, description="registry + offline parquet; STATE_DIR/feast")
    feast_ttl_s: int = Field(7_200, gt=0, description="feature TTL: PIT lookback, staleness")

    # --- training (jobs/ml/train.py) and serving (bentos/predictor) -------------------------
    # the model store is BentoML's own: $BENTOML_HOME (default ~/bentoml)
    model_name: str = Field("candleflow_xgb", description="BentoML model name")
    reports_dir: Path | None = Field(None, description="training reports; STATE_DIR/reports")
    serving_model_tag: str = Field("", description="model to serve; empty = MODEL_NAME:latest")
    serving_timeframe: str = Field("1m", description="default timeframe of /predict")
    # a feature row is stale when now - event_time > timeframe + this (a bar's features are
    # written once the bar has closed, so a healthy 1m row is at most ~60 s + lag old)
    serving_max_delay_s: float = Field(120.0, gt=0, description="allowed lag after a bar")
    serving_model_poll_s: float = Field(30.0, ge=0, description="model store poll; 0 = off")
    serving_workers: int = Field(1, ge=1, description="bentoml serve worker processes")
    serving_max_symbols: int = Field(256, ge=1, description="max entities per request")
    serving_host: str = Field("127.0.0.1", description="`bentoml serve` bind address")
    # model administration (/reload, a model per /score item) needs `Authorization: Bearer
    # <token>`; without a token set it is disabled (403)
    serving_admin_token: SecretStr | None = Field(None, description="bearer token for /reload")

    # --- feature writer (jobs/writers/features.py: `features` -> offline + Redis + ClickHouse)
    topic_features_dlq: str = "features_dlq"
    writer_group_id: str = "candleflow-feature-writer"
    writer_max_batch: int = Field(5_000, ge=1, description="max messages per micro-batch")
    writer_max_wait_ms: int = Field(1_000, ge=1, description="max wait to fill a batch")
    writer_max_backoff_s: float = Field(10.0, gt=0, description="cap of the retry backoff")

    # --- observability (infra/freshness.py): Prometheus /metrics of the writers -----------
    metrics_port: int = Field(9464, ge=0, le=65535, description="writers' /metrics; 0 = off")
    metrics_host: str = Field("127.0.0.1", description="/metrics bind address (0.0.0.0: all)")

    # --- strategy job (jobs/flink/strategy.py) + paper broker (udfs/strategy_rules.md) ---------
    topic_predictions: str = "predictions"
    topic_orders: str = "orders"
    topic_fills: str = "fills"
    topic_equity: str = "equity"
    predictor_url: str = Field("http://127.0.0.1:3000", description="BentoML predictor base URL")
    serving_port: int = Field(3000, ge=1, le=65535, description="`bentoml serve` port")
    predict_timeout_s: float = Field(2.0, gt=0, description="HTTP timeout of one /score call")
    predict_retries: int = Field(2, ge=0, description="retries of a failed /score call")
    # after a failed call (retries spent) the UDF marks rows degraded without calling the
    # service for this long, so a down service costs one timeout per interval, not per batch
    predict_circuit_open_s: float = Field(5.0, ge=0, description="degraded-mode back-off")
    # walk-forward backtests: JSON [{"from_ms": int, "tag": str}, ...]; empty = served model
    predict_model_schedule: Path | None = Field(None, description="model per time (backtest)")
    strategy_id: str = Field("cf1", pattern=r"^[A-Za-z0-9_]{1,32}$")
    strategy_timeframe: str = Field("1m", description="timeframe the strategy trades")
    strategy_config: Path | None = Field(None, description="JSON/YAML StrategyConfig overrides")
    trading_group_id: str = "candleflow-trading-writer"
    topic_candles_dlq: str = "candles_dlq"  # malformed `candles` messages (candles writer)
    candles_group_id: str = "candleflow-candles-writer"

    # --- candles job --------------------------------------------------------------------
    watermark_delay_ms: int = Field(5_000, ge=0, description="allowed out-of-orderness")
    # a trade stamped later than wall clock + this is dead-lettered ("ts_ms in the future")
    # at ingest and in the candles job, so a bad clock cannot push the watermark ahead
    trade_max_future_ms: int = Field(60_000, ge=0, description="max trade ts ahead of now")
    # the candles job counts each (exchange, symbol, trade_id) once per 1m window; repeats
    # within the same window are dropped (state is per window, freed when it fires)
    idle_timeout_ms: int = Field(10_000, ge=0, description="idle partition timeout")
    # on-event: a watermark per record, so lateness depends only on arrival order
    # (deterministic, tested); on-periodic: every 200 ms, cheaper (see bench/results)
    watermark_emit: Literal["on-event", "on-periodic"] = "on-event"
    parallelism: int = Field(1, ge=1)
    flink_target: Literal["local", "cluster"] = "local"
    # the local MiniCluster's REST/UI, RPC and BLOB servers listen here (Flink's default is
    # every interface); a job submitted to a cluster does not change the cluster's binds
    flink_bind_host: str = Field("127.0.0.1", description="local MiniCluster bind address")
    source_connector: Literal["kafka", "filesystem"] = "kafka"
    group_id: str = "candleflow-candles"

    # --- features job (Python UDF execution; defaults chosen by bench/features.py) -------
    # the candles topic is in event-time order per key (the candles job emits a window when
    # its watermark passes), so the features source needs little or no out-of-orderness;
    # every ms here is added to the candle -> feature latency (udfs/README.md, Python
    # execution settings)
    # on-periodic (every 200 ms): a bundle of UDF rows per watermark instead of one round
    # trip to the Python worker per candle (~3x the rate), and candles of one minute that
    # arrive together are all emitted on the next tick (see bench/results/features.json)
    features_watermark_emit: Literal["on-event", "on-periodic"] = "on-periodic"
    watermark_interval_ms: int = Field(200, ge=1, description="periodic watermark interval")
    features_watermark_delay_ms: int = Field(0, ge=0, description="candles out-of-orderness")
    python_execution_mode: Literal["process", "thread"] = "process"
    python_bundle_size: int = Field(100_000, ge=1, description="max rows per Python bundle")
    # a row waits in the pandas UDF's bundle until this timer (a watermark does not flush
    # it): Flink's 1 s default gave the features job a 1 s p50 latency (bench/README.md)
    python_bundle_time_ms: int = Field(100, ge=1, description="max wait before a bundle")
    python_arrow_batch_size: int = Field(10_000, ge=1, description="rows per Arrow batch")

    # --- checkpoints + recovery (every Flink job; sql/flink/README.md "Checkpoints") --------
    # 0 = off. State (Kafka offsets, open windows, OVER buffers) is snapshotted this often;
    # after a failure the job restarts from the last completed checkpoint (fixed-delay
    # restarts). Sinks are at-least-once: records after that checkpoint are written again,
    # and ClickHouse FINAL (ReplacingMergeTree keys) collapses them.
    checkpoint_interval_ms: int = Field(10_000, ge=0, description="0 = no checkpoints")
    checkpoint_dir: Path | None = Field(None, description="default STATE_DIR/flink-checkpoints")
    savepoint_dir: Path | None = Field(None, description="default STATE_DIR/flink-savepoints")
    checkpoints_retained: int = Field(3, ge=1)
    restart_attempts: int = Field(20, ge=0, description="fixed-delay restarts after a failure")
    restart_delay_ms: int = Field(2_000, ge=0)

    # --- Flink standalone cluster ------------------------------------------------------
    flink_rest_port: int = 18081
    flink_rpc_port: int = 16123
    flink_taskmanagers: int = 2
    flink_slots_per_tm: int = 2
    flink_tm_memory: str = "1600m"
    flink_jm_memory: str = "1024m"
    # a remote JobManager REST HOST:PORT (e.g. docker compose); empty = the local cluster
    flink_jobmanager: str = ""
    # python of the UDF workers on the TaskManagers; empty = this interpreter
    flink_python_executable: str = ""
    # a lost TaskManager is declared dead after this (Flink's default 50 s): its jobs restart
    # from their last checkpoint as soon as slots are back
    flink_heartbeat_interval_ms: int = Field(2_000, ge=100)
    flink_heartbeat_timeout_ms: int = Field(15_000, ge=1_000)

    @model_validator(mode="after")
    def _default_clickhouse_url(self) -> Settings:
        if not self.clickhouse_url:
            self.clickhouse_url = f"chdb://{self.state_dir.resolve() / 'chdb'}"
        return self

    @property
    def redis_url(self) -> str:
        return f"redis://{self.redis_host}:{self.redis_port}/0"

    @property
    def feast_home(self) -> Path:
        return self.feast_dir or self.state_dir / "feast"

    @property
    def feast_registry(self) -> Path:
        return self.feast_home / "registry.db"

    @property
    def feast_offline_dir(self) -> Path:
        """Offline store: parquet part files of `features` rows (one file per batch)."""
        return self.feast_home / "offline" / "features"

    @property
    def reports_home(self) -> Path:
        return self.reports_dir or self.state_dir / "reports"

    @property
    def serving_tag(self) -> str:
        return self.serving_model_tag or f"{self.model_name}:latest"

    @property
    def checkpoints_home(self) -> Path:
        return (self.checkpoint_dir or self.state_dir / "flink-checkpoints").resolve()

    @property
    def savepoints_home(self) -> Path:
        return (self.savepoint_dir or self.state_dir / "flink-savepoints").resolve()

    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def kafka_port(self) -> int:
        return int(self.kafka_bootstrap.rsplit(":", 1)[1])

    @property
    def kafka_host(self) -> str:
        return self.kafka_bootstrap.rsplit(":", 1)[0]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def mask_url(url: str) -> str:
    """``scheme://user:secret@host/db?password=x`` -> the same with ``***`` for each secret."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    if parts.password is not None:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{hostport}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        secret = ("password", "token", "secret")
        query = urlencode([(k, "***" if k.lower() in secret else v) for k, v in pairs])
    if netloc == parts.netloc and query == parts.query:
        return url  # nothing to mask (urlunsplit would also drop an empty "//" netloc)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def secret_values(s: Settings, min_len: int = 8) -> list[str]:
    """Every secret the settings hold (passwords, tokens, a URL's password) of at least
    ``min_len`` characters: shorter ones (the local default Grafana password ``admin``)
    would also blank ordinary words; URLs are masked by :func:`mask_url` whatever their
    length."""
    from urllib.parse import urlsplit

    found: list[str] = []
    for value in s.__dict__.values():
        if isinstance(value, SecretStr) and value.get_secret_value():
            found.append(value.get_secret_value())
    for url in (s.clickhouse_url, s.grafana_clickhouse_url):
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        if password:
            found.append(password)
    return sorted({f for f in found if len(f) >= min_len}, key=len, reverse=True)


def redact(text: str, s: Settings) -> str:
    """``text`` with every secret of ``s`` replaced by ``***`` (for output and reports)."""
    for secret in secret_values(s):
        text = text.replace(secret, "***")
    return text


def settings_env(settings: Settings) -> dict[str, str]:
    """The settings as ``CANDLEFLOW_*`` variables: the one way settings cross a process
    boundary (a ``flink run -py`` job, ``bentoml serve``), so that process's
    :func:`get_settings` reads the same values. Secrets are given in clear (the child
    needs them); nothing prints this."""
    out: dict[str, str] = {}
    for k, v in settings.model_dump().items():
        if isinstance(v, SecretStr):
            v = v.get_secret_value()  # else the job would see "**********"
        if v is not None:  # unset optional paths stay unset (not the string "None")
            out[f"CANDLEFLOW_{k.upper()}"] = str(v)
    return out
