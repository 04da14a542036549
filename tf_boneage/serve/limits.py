"""What keeps ``tf-boneage serve`` within its means: a cap on request bodies and a bounded queue
in front of the model.

- :class:`BodyLimit` (ASGI middleware) answers 413 with a JSON body as soon as a request
  declares, or streams, more than the cap: the body is never held whole. (Starlette's own
  limits answer in plain text; every error of this server is JSON.)
- :class:`Queue` runs model work one call at a time in a worker thread; requests beyond
  ``max_waiting`` get 503 at once instead of piling up in memory.
"""

from __future__ import annotations

import json

import anyio
import anyio.to_thread


class Busy(RuntimeError):
    """The queue is full: answer 503."""


async def send_json(send, status: int, body: dict, headers: list | None = None) -> None:
    """Send a whole JSON response over raw ASGI ``send``."""
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


class _TooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: HTTP requests over ``max_bytes`` get ``413 {"error": ...}``, judged by
    their Content-Length before reading, or by the bytes received for a streamed body."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = int(max_bytes)

    def _error(self) -> dict:
        return {"error": f"request body over the limit of {self.max_bytes / 2**20:.3g} MB"}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for key, value in scope.get("headers", []):
            if key == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                return await send_json(send, 413, self._error())
        seen = 0
        started = False

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def watched(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            if not started:
                await send_json(send, 413, self._error())


class Queue:
    """Model work in one worker thread at a time, at most ``max_waiting`` requests waiting
    behind it (:class:`Busy` beyond that). ``waiting`` and ``running`` are counts."""

    def __init__(self, max_waiting: int = 16):
        self.max_waiting = int(max_waiting)
        self.waiting = 0
        self.running = 0
        self._limiter = anyio.CapacityLimiter(1)

    async def run(self, fn, *args):
        """``fn(*args)`` in the worker thread, after the work queued before it."""
        if self.waiting >= self.max_waiting:
            raise Busy(
                f"busy: {self.waiting} requests are waiting for the model; try again shortly"
            )
        self.waiting += 1
        acquired = False
        try:
            async with self._limiter:
                acquired = True
                self.waiting -= 1
                self.running += 1
                try:
                    return await anyio.to_thread.run_sync(fn, *args)
                finally:
                    self.running -= 1
        finally:
            if not acquired:  # cancelled while waiting (the client went away)
                self.waiting -= 1
