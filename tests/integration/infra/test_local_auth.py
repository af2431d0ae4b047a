"""The local Redis with a password (``CANDLEFLOW_REDIS_PASSWORD``): the server requires it,
and the project's clients (health check, Feast online store, the predictor) send it."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from pydantic import SecretStr

from infra.feature_store import feast_env
from infra.local import RedisServer, free_port, local_stack
from infra.settings import Settings

pytestmark = pytest.mark.integration


def test_redis_with_a_password_refuses_clients_without_it(tmp_path: Path) -> None:
    s = Settings(state_dir=tmp_path, redis_port=free_port(), redis_password=SecretStr("pw-1234567"))
    (server,) = [svc for svc in local_stack(s) if isinstance(svc, RedisServer)]
    assert "pw-1234567" not in repr(server)
    print(server.start())
    try:
        assert server.healthy()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(host=server.host, port=server.port).set("k", "v")
        ok = redis.Redis(host=server.host, port=server.port, password="pw-1234567")
        assert ok.set("k", "v") and ok.get("k") == b"v"
        # Feast's connection string carries it (feature_store.yaml: host:port,password=...)
        assert feast_env(s)["CANDLEFLOW_REDIS_AUTH"] == ",password=pw-1234567"
        from infra.feature_store import FeatureStoreClient

        client = FeatureStoreClient(s.model_copy(update={"feast_dir": tmp_path / "feast"}))
        client.apply()
        # an online read goes to Redis: it would raise AuthenticationError without AUTH
        got = client.online_features(["BTCUSDT"], "1m", ["candles:close"])
        assert len(got) == 1 and got["close"].isna().all()
        assert feast_env(Settings(state_dir=tmp_path))["CANDLEFLOW_REDIS_AUTH"] == ""
    finally:
        server.stop()


def test_local_clickhouse_with_a_password(tmp_path: Path) -> None:
    from infra.clickhouse import connect
    from infra.local import ClickHouseServer, clickhouse_service
    from infra.settings import mask_url

    s = Settings(
        state_dir=tmp_path,
        clickhouse_port=free_port(),
        clickhouse_http_port=free_port(),
        clickhouse_password=SecretStr("ch pass/1:x"),  # quoted into the URL
    )
    server = clickhouse_service(s)
    assert isinstance(server, ClickHouseServer) and "ch pass" not in repr(server)
    print(server.start())
    try:
        users = (server.data_dir / "users.xml").read_text()
        assert "ch pass" not in users and "password_sha256_hex" in users
        with connect(server.url) as store:
            assert store.query("SELECT 1 AS one") == [{"one": 1}]
        with pytest.raises(Exception, match=r"(?i)password|authentication"):
            bare = f"clickhouse://{server.host}:{server.port}/default"
            with connect(bare) as store:
                store.query("SELECT 1")
        assert "***" in mask_url(server.url) and "pass" not in mask_url(server.url)
    finally:
        server.stop()
