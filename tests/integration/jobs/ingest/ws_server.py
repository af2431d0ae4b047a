"""A local websocket server for the live-ingestion tests (its per-connection behaviour is
a coroutine), run in a thread of the test process."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.server import serve

Handler = Callable[[Any, int], Awaitable[None]]


class Server:
    """A websocket server on a free port whose per-connection behaviour is ``handler(ws,
    n)`` (n = 1 for the first connection); it records what clients send first."""

    def __init__(self, handler: Handler) -> None:
        self.handler, self.connections, self.port = handler, 0, 0
        self.received: list[Any] = []
        self._ready = threading.Event()

    async def _serve(self, ws: Any) -> None:
        self.connections += 1
        await self.handler(ws, self.connections)

    def _run(self) -> None:
        async def main() -> None:
            self._stop = asyncio.get_running_loop().create_future()
            async with serve(self._serve, "127.0.0.1", 0) as server:
                self.port = server.sockets[0].getsockname()[1]
                self._ready.set()
                await self._stop

        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(main())

    def __enter__(self) -> Server:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self._stop.set_result, None)
        self.thread.join(10)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"
