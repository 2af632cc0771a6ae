"""Live updates: server-sent events carrying the inbox's or the board's fresh fragment.

Each stream re-reads the database every `POLL_SECONDS` and sends the fragment when it differs
from the last one the browser got (each event's id is its digest), so an offer made by any
router instance reaches every instance's browsers; htmx's SSE extension swaps it in. A stream
ends after `STREAM_SECONDS` (and when the browser leaves); the browser reconnects at once with
the id of the last fragment it got, and gets the current one if it differs: nothing is missed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession

from services.router.console.pages import context_of, signed_in
from services.router.console.render import board_data, digest, fragment, inbox_data
from services.router.console.sessions import Viewer
from shared.app import RuntimeDep

routes = APIRouter(prefix="/console/events", include_in_schema=False)
POLL_SECONDS = 1.0
STREAM_SECONDS = 20.0
Loader = Callable[[AsyncSession, Viewer, datetime], Awaitable[dict[str, Any]]]


def sse_message(event: str, html: str) -> str:
    data = "\n".join(f"data: {line}" for line in html.splitlines() or [""])
    return f"event: {event}\nid: {digest(html)}\n{data}\n\n"


async def _stream(request: Request, runtime: RuntimeDep, viewer: Viewer, event: str,
                  template: str, load: Loader, shown: str) -> AsyncIterator[str]:
    clock = context_of(request).clock
    last_digest = shown
    ends = time.monotonic() + STREAM_SECONDS
    yield f"retry: {int(POLL_SECONDS * 1000)}\n\n"
    while time.monotonic() < ends and not await request.is_disconnected():
        async with runtime.db.reading() as session:
            values = await load(session, viewer, clock.now())
        html = fragment(template, **values)
        if digest(html) != last_digest:
            last_digest = digest(html)
            yield sse_message(event, html)
        await asyncio.sleep(POLL_SECONDS)


async def _events(request: Request, runtime: RuntimeDep, event: str, template: str,
                  load: Loader) -> Response:
    """`Last-Event-ID` (a reconnection) or `?shown=` (the page's own fragment) says what the
    browser shows already."""
    shown = (request.headers.get("last-event-id") or request.query_params.get("shown", ""))[:64]
    viewer = await signed_in(request, runtime)
    if viewer is None:
        return Response(status_code=204)  # EventSource stops reconnecting on 204
    return StreamingResponse(
        _stream(request, runtime, viewer, event, template, load, shown),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@routes.get("/inbox")
async def inbox_events(request: Request, runtime: RuntimeDep) -> Response:
    return await _events(request, runtime, "offers", "_offers.html", inbox_data)


@routes.get("/board")
async def board_events(request: Request, runtime: RuntimeDep) -> Response:
    return await _events(request, runtime, "board", "_board.html", board_data)
