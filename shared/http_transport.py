"""An httpx transport whose sockets are plain asyncio streams: cheaper outbound HTTP calls.

httpx drives its connections through anyio, which per request costs a socket write for the
headers and another for the body, and per idle connection in the pool a `poll()` and a
`getpeername()` each time a request looks for a connection. At a webhook per lead that was a
third of the router's CPU. `lean_transport` keeps everything else of httpx and httpcore
(requests, responses, pooling and keep-alive, TLS, timeouts, the exceptions raised) and
swaps only the network layer, httpcore's documented `AsyncNetworkBackend`, for asyncio streams:

- what httpcore writes is gathered and sent in one write when it first reads the answer (or
  once 64 KiB are waiting), so a request is one packet, not two;
- an idle connection counts as closed by the server once its reader has seen the end of the
  stream, which the event loop notes as it happens: no system call to find out;
- the pool's bookkeeping at each request is linear in its connections (`LinearPool`), not
  quadratic.

`DirectClient` sends requests straight to such a transport, without `httpx.AsyncClient`'s
layer (request building, cookies, redirects), for callers that need none of it: the router's
webhooks.

httpx's `AsyncHTTPTransport` takes no network backend: `lean_transport` builds one and gives
it an httpcore pool on `AsyncioBackend` instead of its own (its `_pool` attribute). That and
`LinearPool` are the two places that touch the libraries' internals, both checked by
tests/test_library_internals.py.
"""

# ruff: noqa: ASYNC109 - the `timeout` parameters are httpcore's interface, not our choice

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, Self

import httpcore
import httpx

_FLUSH_AT = 64 * 1024
"""Bytes waiting to be written past which a write goes out at once."""

SocketOption = (tuple[int, int, int] | tuple[int, int, bytes | bytearray]
                | tuple[int, int, None, int])


class AsyncioStream(httpcore.AsyncNetworkStream):
    """One connection; writes wait in `_pending` until the next read (or start of TLS)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._pending: list[bytes] = []
        self._pending_bytes = 0

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        await self._flush(timeout)
        try:
            async with asyncio.timeout(timeout):
                return await self._reader.read(max_bytes)
        except TimeoutError as error:
            raise httpcore.ReadTimeout(str(error)) from error
        except OSError as error:
            raise httpcore.ReadError(str(error)) from error

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        self._pending.append(buffer)
        self._pending_bytes += len(buffer)
        if self._pending_bytes >= _FLUSH_AT:
            await self._flush(timeout)

    async def _flush(self, timeout: float | None) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        try:
            if self._writer.is_closing():
                raise ConnectionResetError("the connection is closed")
            self._writer.write(data)
            if self._writer.transport.get_write_buffer_size():
                async with asyncio.timeout(timeout):
                    await self._writer.drain()
        except TimeoutError as error:
            raise httpcore.WriteTimeout(str(error)) from error
        except OSError as error:
            raise httpcore.WriteError(str(error)) from error

    async def aclose(self) -> None:
        self._pending.clear()
        self._writer.close()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            await self._flush(timeout)
            async with asyncio.timeout(timeout):
                await self._writer.start_tls(ssl_context, server_hostname=server_hostname)
        except TimeoutError as error:
            await self.aclose()
            raise httpcore.ConnectTimeout(str(error)) from error
        except (OSError, ssl.SSLError, httpcore.WriteError) as error:
            await self.aclose()
            raise httpcore.ConnectError(str(error)) from error
        return self

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # Idle and readable means the server closed it (or broke the protocol).
            return self._reader.at_eof() or self._writer.is_closing()
        if info == "ssl_object":
            return self._writer.get_extra_info("ssl_object")
        if info == "client_addr":
            return self._writer.get_extra_info("sockname")
        if info == "server_addr":
            return self._writer.get_extra_info("peername")
        if info == "socket":
            return self._writer.get_extra_info("socket")
        return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    """Opens `AsyncioStream` connections."""

    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        local = (local_address, 0) if local_address else None
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, port, local_addr=local)
        except TimeoutError as error:
            raise httpcore.ConnectTimeout(str(error)) from error
        except OSError as error:
            raise httpcore.ConnectError(str(error)) from error
        _set_options(writer, socket_options)  # asyncio sets TCP_NODELAY itself
        return AsyncioStream(reader, writer)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_unix_connection(path)
        except TimeoutError as error:
            raise httpcore.ConnectTimeout(str(error)) from error
        except OSError as error:
            raise httpcore.ConnectError(str(error)) from error
        _set_options(writer, socket_options)
        return AsyncioStream(reader, writer)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _set_options(writer: asyncio.StreamWriter,
                 socket_options: Iterable[SocketOption] | None) -> None:
    sock = writer.get_extra_info("socket")
    for option in socket_options or ():
        sock.setsockopt(*option)


class LinearPool(httpcore.AsyncConnectionPool):
    """httpcore's pool with its bookkeeping linear in its connections.

    httpcore 1.0 runs `_assign_requests_to_connections` at each request's start and end, and
    for every idle connection it counts the whole pool again (`len([... for connection in
    self._connections])`, which is `len(self._connections)`): a hundred kept connections
    made each webhook cost twenty thousand calls. This is the same method, that count read
    once per connection; nothing else differs (tests/test_library_internals.py checks the
    original still reads as copied here)."""

    def _assign_requests_to_connections(self) -> list[httpcore.AsyncConnectionInterface]:
        closing_connections: list[httpcore.AsyncConnectionInterface] = []
        for connection in list(self._connections):
            if connection.is_closed():
                self._connections.remove(connection)
            elif connection.has_expired() or (connection.is_idle()
                  and len(self._connections) > self._max_keepalive_connections):
                self._connections.remove(connection)
                closing_connections.append(connection)
        queued_requests = [request for request in self._requests if request.is_queued()]
        for pool_request in queued_requests:
            origin = pool_request.request.url.origin
            available = next((connection for connection in self._connections
                              if connection.can_handle_request(origin)
                              and connection.is_available()), None)
            if available is not None:
                pool_request.assign_to_connection(available)
            elif len(self._connections) < self._max_connections:
                connection = self.create_connection(origin)
                self._connections.append(connection)
                pool_request.assign_to_connection(connection)
            else:
                idle = next((connection for connection in self._connections
                             if connection.is_idle()), None)
                if idle is not None:
                    self._connections.remove(idle)
                    closing_connections.append(idle)
                    connection = self.create_connection(origin)
                    self._connections.append(connection)
                    pool_request.assign_to_connection(connection)
        return closing_connections


def lean_transport(
    *, limits: httpx.Limits | None = None, verify: ssl.SSLContext | bool = True,
    retries: int = 0,
) -> httpx.AsyncHTTPTransport:
    """httpx's transport, its connections on `AsyncioBackend` (HTTP/1.1; no proxy)."""
    limits = limits or httpx.Limits(max_connections=100, max_keepalive_connections=20)
    # Made once: loading the certificate authorities costs milliseconds.
    context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(
        verify=verify)
    transport = httpx.AsyncHTTPTransport(verify=context, limits=limits, retries=retries)
    transport._pool = LinearPool(  # the seam: see the module's docstring
        ssl_context=context,
        max_connections=limits.max_connections,
        max_keepalive_connections=limits.max_keepalive_connections,
        keepalive_expiry=limits.keepalive_expiry,
        retries=retries,
        network_backend=AsyncioBackend(),
    )
    return transport


class HttpClient(Protocol):
    """What `shared.outbound` calls: `httpx.AsyncClient`, or `DirectClient`."""

    async def request(
        self, method: str, url: httpx.URL | str, *, content: bytes | None = None,
        headers: Mapping[str, str] | None = None, extensions: dict[str, Any] | None = None,
    ) -> httpx.Response: ...


class DirectClient:
    """Requests sent straight to a transport, without `httpx.AsyncClient`'s layer around it
    (request building, cookies, auth, redirects, event hooks: a quarter of a webhook call's
    CPU). Redirects are never followed and cookies never kept, as the webhooks want; the
    response is read whole and closed, as `AsyncClient.request` does."""

    def __init__(self, transport: httpx.AsyncBaseTransport, *, timeout: httpx.Timeout,
                 headers: Mapping[str, str] | None = None) -> None:
        self.transport = transport
        self.headers = dict(headers or {})
        self._timeout = timeout.as_dict()

    async def request(
        self, method: str, url: httpx.URL | str, *, content: bytes | None = None,
        headers: Mapping[str, str] | None = None, extensions: dict[str, Any] | None = None,
    ) -> httpx.Response:
        request = httpx.Request(method, url, content=content,
                                headers={**self.headers, **(headers or {})},
                                extensions={"timeout": self._timeout, **(extensions or {})})
        response = await self.transport.handle_async_request(request)
        response.request = request
        try:
            await response.aread()
        finally:
            await response.aclose()
        return response

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
