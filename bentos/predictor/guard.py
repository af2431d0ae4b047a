"""Request guards of the prediction service: model-administration auth and body limits.

Pure functions and one small ASGI middleware, so they are unit-testable without a server.

- :func:`admin_refusal`: ``/reload`` and a per-item ``model`` in ``/score`` need
  ``Authorization: Bearer <CANDLEFLOW_SERVING_ADMIN_TOKEN>``; with no token configured model
  administration is disabled (403), with a wrong or missing one it is 401.
- :class:`BatchLimit`: ``/predict_batch`` is an adaptive-batching endpoint, whose request
  list BentoML does not bound; this answers 413 with a message for a body over
  ``max_bytes`` or a JSON list of more than ``max_items`` items, before BentoML queues it.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import SecretStr

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def admin_refusal(
    token: SecretStr | None, authorization: str | None
) -> tuple[int, str, str] | None:
    """None if the caller may administer models, else (status, reason, message)."""
    if token is None or not token.get_secret_value():
        return (
            403,
            "admin_disabled",
            "model administration is disabled: set CANDLEFLOW_SERVING_ADMIN_TOKEN on the "
            "server and send 'Authorization: Bearer <token>'",
        )
    want = f"Bearer {token.get_secret_value()}".encode()
    if not authorization or not hmac.compare_digest(authorization.encode(), want):
        return 401, "unauthorized", "model administration needs 'Authorization: Bearer <token>'"
    return None


def count_items(body: bytes) -> int | None:
    """Items in a ``/predict_batch`` body: a JSON list or ``{"items": [...]}``; None when
    the body is not JSON of that shape (validation answers that with 400)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if isinstance(doc, dict):
        doc = doc.get("items")
    return len(doc) if isinstance(doc, list) else None


class BatchLimit:
    """ASGI middleware: 413 for ``paths`` whose body exceeds ``max_bytes`` or holds more
    than ``max_items`` items; other requests pass through untouched."""

    def __init__(self, app: Any, *, paths: tuple[str, ...], max_items: int, max_bytes: int) -> None:
        self.app, self.paths = app, paths
        self.max_items, self.max_bytes = max_items, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(send, f"request body over {self.max_bytes:,} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        n = count_items(body)
        if n is not None and n > self.max_items:
            await self._refuse(send, f"{n:,} items > {self.max_items:,} per request")
            return
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(send: Send, message: str) -> None:
        payload = json.dumps({"error": message, "reason": "too_many_items"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": payload})
