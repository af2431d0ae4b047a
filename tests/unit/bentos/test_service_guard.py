"""The prediction service's guards (bentos/predictor/guard.py) and secret masking
(infra/settings.py): admin token, batch limits, URLs and reports without secrets."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from pydantic import SecretStr

from bentos.predictor.guard import BatchLimit, admin_refusal, count_items
from infra.settings import Settings, mask_url, redact, secret_values


def test_admin_disabled_without_a_token() -> None:
    assert admin_refusal(None, "Bearer x")[:2] == (403, "admin_disabled")  # type: ignore[index]
    assert admin_refusal(SecretStr(""), None)[:2] == (403, "admin_disabled")  # type: ignore[index]


@pytest.mark.parametrize(
    "header", [None, "", "Bearer", "Bearer wrong", "bearer s3cret-token", "s3cret-token"]
)
def test_admin_needs_the_exact_bearer_token(header: str | None) -> None:
    got = admin_refusal(SecretStr("s3cret-token"), header)
    assert got is not None and got[:2] == (401, "unauthorized")
    assert "s3cret" not in got[2]  # the message never echoes the secret


def test_admin_accepts_the_token() -> None:
    assert admin_refusal(SecretStr("s3cret-token"), "Bearer s3cret-token") is None


@pytest.mark.parametrize(
    ("body", "n"),
    [
        (b'{"items": [{"symbol": "A"}, {"symbol": "B"}]}', 2),
        (b'[{"symbol": "A"}]', 1),
        (b'{"items": "x"}', None),
        (b"{not json", None),
        (b"", None),
        (b"\xff\xfe", None),
    ],
)
def test_count_items(body: bytes, n: int | None) -> None:
    assert count_items(body) == n


def _call(mw: BatchLimit, path: str, chunks: list[bytes]) -> tuple[int, Any, list[bytes]]:
    """Drive the middleware with a body in ``chunks``; returns (status, body, what the
    wrapped app read)."""
    seen: list[bytes] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        while True:
            m = await receive()
            seen.append(m.get("body", b""))
            if not m.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    mw.app = app
    queue = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return queue.pop(0)

    async def send(m: dict[str, Any]) -> None:
        sent.append(m)

    asyncio.run(mw({"type": "http", "path": path}, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body, seen


def test_batch_limit_refuses_too_many_items_with_413() -> None:
    mw = BatchLimit(None, paths=("/predict_batch",), max_items=3, max_bytes=10_000)
    body = json.dumps({"items": [{"symbol": "BTCUSDT"}] * 4}).encode()
    status, out, seen = _call(mw, "/predict_batch", [body[:10], body[10:]])
    assert status == 413 and not seen
    assert json.loads(out) == {"error": "4 items > 3 per request", "reason": "too_many_items"}


def test_batch_limit_refuses_a_large_body_before_reading_it_all() -> None:
    mw = BatchLimit(None, paths=("/predict_batch",), max_items=3, max_bytes=100)
    status, out, seen = _call(mw, "/predict_batch", [b"x" * 60, b"x" * 60, b"x" * 60])
    assert status == 413 and b"over 100 bytes" in out and not seen


def test_batch_limit_passes_the_body_through_unchanged() -> None:
    mw = BatchLimit(None, paths=("/predict_batch",), max_items=3, max_bytes=10_000)
    body = json.dumps({"items": [{"symbol": "BTCUSDT"}] * 3}).encode()
    status, out, seen = _call(mw, "/predict_batch", [body[:7], body[7:]])
    assert status == 200 and out == b"ok" and b"".join(seen) == body
    status, _, seen = _call(mw, "/predict", [b"x" * 20_000])  # other routes: untouched
    assert status == 200 and seen == [b"x" * 20_000]


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (
            "clickhouse://cf:s3cret@clickhouse:9000/candleflow",
            "clickhouse://cf:***@clickhouse:9000/candleflow",
        ),
        ("clickhouse://cf:p@h:9000/db", "clickhouse://cf:***@h:9000/db"),  # short ones too
        ("clickhouse://default@h:9000/db", "clickhouse://default@h:9000/db"),
        ("chdb:///tmp/x/chdb", "chdb:///tmp/x/chdb"),
        ("http://h/q?user=a&password=s3cret", "http://h/q?user=a&password=%2A%2A%2A"),
    ],
)
def test_mask_url(url: str, masked: str) -> None:
    assert mask_url(url) == masked


def test_redact_removes_every_secret_of_the_settings() -> None:
    s = Settings(
        clickhouse_url="clickhouse://cf:ch-pass-123@h:9000/db",
        serving_admin_token=SecretStr("tok-abcdefgh"),
        grafana_token=SecretStr("glsa_0123456789"),
    )
    assert set(secret_values(s)) >= {"ch-pass-123", "tok-abcdefgh", "glsa_0123456789"}
    text = json.dumps({"url": s.clickhouse_url, "err": "auth tok-abcdefgh failed"})
    out = redact(text, s)
    for secret in ("ch-pass-123", "tok-abcdefgh"):
        assert secret not in out
    assert "admin" in redact("grafana user admin", Settings())  # short default kept
