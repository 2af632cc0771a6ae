"""Live updates: server-sent events carrying the inbox's or the board's fresh fragment.

Each stream re-reads the database every `POLL_SECONDS` and sends the fragment when it
differs from the last one sent, so an offer made by any router instance reaches every
instance's browsers; htmx's SSE extension swaps it in. A stream ends after
`STREAM_SECONDS` (and when the browser leaves); the browser reconnects at once and gets the
current fragment first, so nothing is missed between two streams.
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
from services.router.console.render import board_data, fragment, inbox_data
from services.router.console.sessions import Viewer
from shared.app import RuntimeDep

routes = APIRouter(prefix="/console/events", include_in_schema=False)
POLL_SECONDS = 1.0
STREAM_SECONDS = 20.0
Loader = Callable[[AsyncSession, Viewer, datetime], Awaitable[dict[str, Any]]]


def sse_message(event: str, html: str) -> str:
    data = "\n".join(f"data: {line}" for line in html.splitlines() or [""])
    return f"event: {event}\n{data}\n\n"


async def _stream(request: Request, runtime: RuntimeDep, viewer: Viewer, event: str,
                  template: str, load: Loader) -> AsyncIterator[str]:
    clock = context_of(request).clock
    last = None
    ends = time.monotonic() + STREAM_SECONDS
    yield f"retry: {int(POLL_SECONDS * 1000)}\n\n"
    while time.monotonic() < ends and not await request.is_disconnected():
        async with runtime.db.reading() as session:
            values = await load(session, viewer, clock.now())
        html = fragment(template, **values)
        if html != last:
            last = html
            yield sse_message(event, html)
        await asyncio.sleep(POLL_SECONDS)


async def _events(request: Request, runtime: RuntimeDep, event: str, template: str,
                  load: Loader) -> Response:
    viewer = await signed_in(request, runtime)
    if viewer is None:
        return Response(status_code=204)  # EventSource stops reconnecting on 204
    return StreamingResponse(
        _stream(request, runtime, viewer, event, template, load),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@routes.get("/inbox")
async def inbox_events(request: Request, runtime: RuntimeDep) -> Response:
    return await _events(request, runtime, "offers", "_offers.html", inbox_data)


@routes.get("/board")
async def board_events(request: Request, runtime: RuntimeDep) -> Response:
    return await _events(request, runtime, "board", "_board.html", board_data)
