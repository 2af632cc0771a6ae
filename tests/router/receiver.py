"""A real HTTP server on a local port that records webhook calls and answers as scripted.

It listens on `RECEIVER_PORT` (one free port for the test session) unless told otherwise, so
the router's settings can allow exactly its origin, `ALLOWED_RECEIVER`, past the SSRF guard.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Self

from leadrelay.broker import free_port

RECEIVER_PORT = free_port()
ALLOWED_RECEIVER = f"http://127.0.0.1:{RECEIVER_PORT}"
ALLOWED_WEBHOOKS = f"{ALLOWED_RECEIVER},http://127.0.0.1:9"
"""What router tests allow: the receiver, and port 9 on loopback (nothing listens there)."""


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    raw: bytes = b""


class WebhookReceiver:
    """Answers each request with the next scripted `Reply` (then 200 once the script is out)."""

    def __init__(self, replies: Iterable[Reply] = (), *, port: int = RECEIVER_PORT) -> None:
        self.replies = deque(replies)
        self.listen_port = port
        self.received: list[Received] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self) -> list[dict[str, Any]]:
        return [request.body for request in self.received]

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.listen_port)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            request_line = (await reader.readline()).decode()
            headers: dict[str, str] = {}
            while (line := (await reader.readline()).decode()) not in ("\r\n", "\n", ""):
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            path = request_line.split(" ")[1]
            self.received.append(
                Received(path, headers, json.loads(body) if body else {}, body)
            )
            reply = self.replies.popleft() if self.replies else Reply()
            if reply.delay:
                await asyncio.sleep(reply.delay)
            head = [f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}"]
            head += [f"{name}: {value}" for name, value in reply.headers.items()]
            head += ["Content-Length: 0", "Connection: close", "", ""]
            writer.write("\r\n".join(head).encode())
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._handlers.discard(task)
