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


BIG = 300 * 1024


async def _big(_request: Request) -> Response:
    async def parts() -> AsyncIterator[bytes]:
        for _ in range(BIG // 1024):
            yield b"b" * 1024  # no await between parts: all in one turn of the loop

    return StreamingResponse(parts(), media_type="text/plain")


APP = Starlette(routes=[Route("/json", _json), Route("/stream", _stream),
                        Route("/close", _closing), Route("/big", _big)])


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


async def _instant(scope: Any, _receive: Any, send: Any) -> None:
    """An answer written in the very turn the request is read (no framework in between)."""
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"10")]})
    await send({"type": "http.response.body", "body": b"last words"})


async def _serving(writes: list[bytes], requests: Any, *, raw: bool = False,
                   app: Any = APP) -> Any:
    listener = bind_listener("127.0.0.1", 0, advice="")
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False,
                                           lifespan="on" if app is APP else "off",
                                           http=_protocol_recording(writes)))
    serving = asyncio.create_task(server.serve(sockets=[listener]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        if raw:
            return await requests(port)
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
    carrying = [next(number for number, write in enumerate(writes) if chunk in write)
                for chunk in CHUNKS]
    assert len(set(carrying)) == len(CHUNKS), [len(write) for write in writes]
    assert writes[-1].startswith(b"HTTP/1.1 200 OK\r\n") and writes[-1].endswith(b"last words")


def test_an_answer_to_a_client_that_half_closed_is_sent() -> None:
    async def half_close(port: int) -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        writer.write_eof()  # all it will send, as `nc -N` or an HTTP/1.0 probe does
        answer = await asyncio.wait_for(reader.read(), timeout=10)
        writer.close()
        return answer

    for _ in range(5):
        answer = asyncio.run(_serving([], half_close, raw=True, app=_instant))
        assert answer.startswith(b"HTTP/1.1 200 OK\r\n") and answer.endswith(b"last words")


def test_a_big_body_goes_out_as_it_is_written_not_held_whole() -> None:
    writes: list[bytes] = []

    async def big(client: httpx.AsyncClient) -> bytes:
        return (await client.get("/big")).content

    assert asyncio.run(_serving(writes, big)) == b"b" * BIG
    # Held up to 64 KiB at a time, so the real transport's flow control sees it as it grows.
    assert len(writes) >= BIG // (64 * 1024)
    assert max(map(len, writes)) <= 65 * 1024 + 200
