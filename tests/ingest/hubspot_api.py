"""A local HTTP server that answers as HubSpot's CRM API documents it, for the contact fetch.

`GET /crm/v3/objects/contacts/{id}?properties=a,b` with `Authorization: Bearer <token>`:
- `200` `{"id", "properties": {...asked for, with hs_object_id, createdate, lastmodifieddate},
  "createdAt", "updatedAt", "archived": false}`, each property a string or null;
- `401` with HubSpot's error body (`category: INVALID_AUTHENTICATION`) for another token;
- `404` with its `OBJECT_NOT_FOUND` body for an unknown id;
- any scripted `Scripted` answers first, in order (a `429` with `Retry-After` and the
  `RATE_LIMIT` body, a `503`...).
A third-party SaaS, so a fake: real sockets, HubSpot's contract, nothing of ingest's code.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

CONTACT_PATH = "/crm/v3/objects/contacts/"
ALWAYS_RETURNED = ("createdate", "hs_object_id", "lastmodifieddate")


@dataclass(frozen=True)
class Scripted:
    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds the answer takes (a call still in flight when its caller dies)."""


@dataclass(frozen=True)
class Request:
    path: str
    query: dict[str, list[str]]
    authorization: str | None
    at: float
    """`time.monotonic()` when it arrived."""


def error_body(message: str, category: str, **extra: Any) -> dict[str, Any]:
    return {"status": "error", "message": message, "correlationId": str(uuid.uuid4()),
            "category": category, **extra}


def rate_limited(retry_after: int | None = None, policy: str = "SECONDLY") -> Scripted:
    """HubSpot's `429`: its `RATE_LIMIT` body, and `Retry-After` when given."""
    body = {"status": "error", "message": f"You have reached your {policy.lower()} limit.",
            "errorType": "RATE_LIMIT", "correlationId": str(uuid.uuid4()),
            "policyName": policy, "requestId": str(uuid.uuid4())}
    headers = {"X-HubSpot-RateLimit-Max": "100", "X-HubSpot-RateLimit-Remaining": "0"}
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return Scripted(429, body, headers)


class HubSpotCrm:
    """The contacts of one HubSpot account, behind one private app token."""

    def __init__(self, token: str, contacts: dict[str, dict[str, str | None]] | None = None,
                 script: list[Scripted] | None = None) -> None:
        self.token = token
        self.contacts = dict(contacts or {})
        self.script = deque(script or [])
        self.requests: list[Request] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    @property
    def base_url(self) -> str:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
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

    def answer(self, request: Request) -> Scripted:
        if request.authorization != f"Bearer {self.token}":
            return Scripted(401, error_body(
                "Authentication credentials not found. This API supports OAuth 2.0 "
                "authentication and you can find more details at "
                "https://developers.hubspot.com/docs/methods/auth/oauth-overview",
                "INVALID_AUTHENTICATION"))
        if self.script:
            return self.script.popleft()
        contact_id = request.path.removeprefix(CONTACT_PATH)
        if not request.path.startswith(CONTACT_PATH) or contact_id not in self.contacts:
            return Scripted(404, error_body("Object not found.  objectId are usually numeric.",
                                            "OBJECT_NOT_FOUND", context={"id": [contact_id]}))
        stored = self.contacts[contact_id]
        asked = ",".join(request.query.get("properties", [])).split(",")
        properties: dict[str, str | None] = {
            "createdate": "2026-12-07T08:00:00.000Z", "hs_object_id": contact_id,
            "lastmodifieddate": "2026-12-07T08:00:01.000Z",
        }
        properties.update({name: stored.get(name) for name in asked if name})
        return Scripted(200, {"id": contact_id, "properties": properties,
                              "createdAt": "2026-12-07T08:00:00.000Z",
                              "updatedAt": "2026-12-07T08:00:01.000Z", "archived": False})

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
            target = urlsplit(request_line.split(" ")[1])
            request = Request(target.path, parse_qs(target.query),
                              headers.get("authorization"), time.monotonic())
            self.requests.append(request)
            reply = self.answer(request)
            await asyncio.sleep(reply.delay)
            body = json.dumps(reply.body).encode() if reply.body is not None else b""
            head = [f"HTTP/1.1 {reply.status} {HTTPStatus(reply.status).phrase}",
                    "Content-Type: application/json;charset=utf-8",
                    *(f"{name}: {value}" for name, value in reply.headers.items()),
                    f"Content-Length: {len(body)}", "Connection: close", "", ""]
            writer.write("\r\n".join(head).encode() + body)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            self._handlers.discard(task)
