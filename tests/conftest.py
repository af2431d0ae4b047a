"""Session fixtures: real local services on random loopback ports, isolated per session.

Nothing here is mocked: ``broker`` is a Tansu process (Kafka protocol), ``redis_server``
a redis-server process, ``clickhouse_server`` Debian's clickhouse-server 18.16, and topics
are unique per test (``topics`` fixture).
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.kafka import ensure_topics
from infra.local import ClickHouseServer, RedisServer, TansuBroker, free_port
from infra.settings import SHARED_DATA, Settings

TRADES_PARQUET = SHARED_DATA / "binance_trades_sample.parquet"
CANDLES_CSV = SHARED_DATA / "binance_1m_top5_2021.csv.gz"

# a run started in the background of a non-interactive shell inherits SIGINT ignored, and so
# would every subprocess it starts; the Ctrl-C tests (replay, live ingest) need the default
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("state")


@pytest.fixture(scope="session")
def broker(state_dir: Path) -> Iterator[TansuBroker]:
    b = TansuBroker(port=free_port(), state_dir=state_dir)
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def redis_server(state_dir: Path) -> Iterator[RedisServer]:
    r = RedisServer(port=free_port(), state_dir=state_dir)
    r.start()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def clickhouse_server(state_dir: Path) -> Iterator[ClickHouseServer]:
    """Debian's clickhouse-server 18.16 (apt) on random loopback ports."""
    c = ClickHouseServer(port=free_port(), http_port=free_port(), state_dir=state_dir)
    c.start()
    yield c
    c.stop()


def make_settings(broker: TansuBroker, state_dir: Path, **overrides: object) -> Settings:
    """Settings pointing at the test broker with unique topic names."""
    tag = uuid.uuid4().hex[:8]
    values: dict[str, object] = {
        "kafka_bootstrap": broker.bootstrap,
        "state_dir": state_dir,
        "topic_trades": f"trades_{tag}",
        "topic_trades_dlq": f"trades_dlq_{tag}",
        "topic_trades_late": f"trades_late_{tag}",
        "topic_candles": f"candles_{tag}",
        "group_id": f"candles_{tag}",
    }
    values.update(overrides)
    s = Settings(**values)  # type: ignore[arg-type]
    ensure_topics(
        s.kafka_bootstrap,
        [s.topic_trades, s.topic_trades_dlq, s.topic_trades_late, s.topic_candles],
        partitions=s.topic_partitions,
    )
    return s


@pytest.fixture
def settings(broker: TansuBroker, state_dir: Path) -> Settings:
    return make_settings(broker, state_dir)
