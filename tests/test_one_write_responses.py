"""`leadrelay.one_write_responses`: a served response goes out in one write, and nothing is
lost, reordered or held: keep-alive, streamed bodies and closed connections, over a socket
with uvicorn serving."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from leadrelay.one_write_responses import OneWriteH11Protocol
from leadrelay.preflight import bind_listener

CHUNKS = [b"first,", b"second,", b"third"]


async def _json(request: Request) -> Response:
    return JSONResponse({"path": request.url.path, "padding": "x" * 3000})


async def _stream(_request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for chunk in CHUNKS:
            yield chunk
            await asyncio.sleep(0.01)

    return StreamingResponse(chunks(), media_type="text/plain")


async def _closing(_request: Request) -> Response:
    return Response(b"last words", headers={"Connection": "close"})


APP = Starlette(routes=[Route("/json", _json), Route("/stream", _stream),
                        Route("/close", _closing)])


class _Recorder:
    """The connection's real transport, its writes counted."""

    def __init__(self, transport: asyncio.Transport, writes: list[bytes]) -> None:
        self._transport = transport
        self._writes = writes

    def write(self, data: bytes) -> None:
        self._writes.append(bytes(data))
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def _protocol_recording(writes: list[bytes]) -> type[OneWriteH11Protocol]:
    class Recording(OneWriteH11Protocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(cast(asyncio.Transport, _Recorder(transport, writes)))

    return Recording


async def _serving(writes: list[bytes], requests: Any) -> Any:
    listener = bind_listener("127.0.0.1", 0, advice="")
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(APP, log_config=None, access_log=False,
                                           http=_protocol_recording(writes)))
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            return await requests(client)
    finally:
        server.should_exit = True
        await serving


def test_each_response_of_a_kept_alive_connection_is_one_write() -> None:
    writes: list[bytes] = []

    async def three(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [await client.get("/json") for _ in range(3)]

    answers = asyncio.run(_serving(writes, three))
    assert [answer.json()["path"] for answer in answers] == ["/json"] * 3
    assert len(writes) == 3, [len(write) for write in writes]
    assert all(write.startswith(b"HTTP/1.1 200 OK\r\n") and write.endswith(b"x\"}")
               for write in writes)


def test_a_streamed_body_goes_out_as_it_comes_and_a_closing_response_whole() -> None:
    writes: list[bytes] = []

    async def stream_then_close(client: httpx.AsyncClient) -> tuple[bytes, bytes]:
        streamed = await client.get("/stream")
        closing = await client.get("/close")
        return streamed.content, closing.content

    streamed, closing = asyncio.run(_serving(writes, stream_then_close))
    assert streamed == b"".join(CHUNKS)
    assert closing == b"last words"
    # The chunks were sent in turns of the loop of their own: not held for one another.
    assert sum(chunk in write for write in writes for chunk in CHUNKS) == len(CHUNKS)
    assert len(writes) >= len(CHUNKS) + 1
