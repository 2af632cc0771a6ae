"""The lean httpx transport (`shared.http_transport`) against a real local HTTP server."""

from __future__ import annotations

import asyncio
from asyncio.selector_events import _SelectorSocketTransport
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest

from shared.http_transport import lean_transport


@dataclass
class Server:
    """A keep-alive HTTP/1.1 server that answers each request `200 ok` (after `delay`) and
    notes every read it made and every connection it accepted."""

    reads: list[bytes] = field(default_factory=list)
    connections: int = 0
    delay: float = 0.0
    close_after_answer: bool = False
    port: int = 0
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        buffered = b""
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                writer.close()
                return
            self.reads.append(chunk)
            buffered += chunk
            head, separator, rest = buffered.partition(b"\r\n\r\n")
            if not separator:
                continue
            length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), 0)
            if len(rest) < length:
                continue
            buffered = rest[length:]
            await asyncio.sleep(self.delay)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            if self.close_after_answer:
                writer.close()
                return


@asynccontextmanager
async def serving(server: Server) -> AsyncIterator[str]:
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        for writer in server.writers:
            writer.close()
        listener.close()


async def test_a_request_goes_out_in_one_write_and_its_connection_is_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client_writes: list[bytes] = []
    write = _SelectorSocketTransport.write

    def counting(transport: _SelectorSocketTransport, data: bytes) -> None:
        if not bytes(data).startswith(b"HTTP/1.1"):  # not the server's answer
            client_writes.append(bytes(data))
        write(transport, data)

    monkeypatch.setattr(_SelectorSocketTransport, "write", counting)
    server = Server()
    async with serving(server) as url, httpx.AsyncClient(transport=lean_transport()) as client:
        for number in range(3):
            answer = await client.post(f"{url}/hook", content=b'{"n":%d}' % number,
                                       headers={"Content-Type": "application/json"})
            assert (answer.status_code, answer.text) == (200, "ok")
    assert server.connections == 1
    assert len(client_writes) == 3, "each request, headers and body, is one write"
    assert all(write.endswith(b'{"n":%d}' % number)
               for number, write in enumerate(client_writes))


async def test_a_connection_the_server_closed_while_idle_is_not_reused() -> None:
    server = Server(close_after_answer=True)
    async with serving(server) as url, httpx.AsyncClient(transport=lean_transport()) as client:
        for _ in range(3):
            assert (await client.post(f"{url}/hook", content=b"{}")).status_code == 200
            await asyncio.sleep(0.05)  # the server's close reaches the client
    assert server.connections == 3


async def test_timeouts_and_refused_connections_raise_httpx_errors() -> None:
    server = Server(delay=1.0)
    async with serving(server) as url, httpx.AsyncClient(transport=lean_transport(),
                                                         timeout=0.2) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.post(f"{url}/slow", content=b"{}")
        port = server.port
    async with httpx.AsyncClient(transport=lean_transport(), timeout=1.0) as client:
        with pytest.raises(httpx.ConnectError):
            await client.post(f"http://127.0.0.1:{port}/gone", content=b"{}")


async def test_concurrent_requests_share_a_bounded_pool_and_idle_connections_are_reused() -> None:
    server = Server(delay=0.05)
    limits = httpx.Limits(max_connections=4, max_keepalive_connections=4)
    async with serving(server) as url, httpx.AsyncClient(
            transport=lean_transport(limits=limits)) as client:
        for _ in range(2):
            answers = await asyncio.gather(*(client.post(f"{url}/hook", content=b"{}")
                                             for _ in range(12)))
            assert [answer.status_code for answer in answers] == [200] * 12
    assert server.connections == 4, "at most four at once, kept for the second round"
