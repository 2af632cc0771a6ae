"""`OneWriteH11Protocol`: uvicorn's HTTP/1.1 protocol, a response's parts sent in one write.

uvicorn writes a response's status line and headers when the app sends `http.response.start`,
and its body when the app sends `http.response.body`: two writes, so two packets, each a
system call and a wake-up of the client. Nagle's algorithm used to hold the second back until
the client acknowledged the first, 40 ms later (`leadrelay.preflight.bind_listener` turns it
off); with it off they cost twice what one does: the socket writes were a seventh of ingest's
CPU at 100 leads/s.

Here the connection's transport is wrapped: what the protocol writes during one turn of the
event loop is joined and written once, at the start of the next turn (an app sends the start
and the body of a response back to back). A close, the client's end of input or a protocol
switch writes what is waiting first; an abort drops it. Nothing is held longer than that turn,
so a streamed body's parts still go out as they come, and past `HOLD_AT_MOST` bytes a write
goes out at once, so the real transport's buffer and its flow control see a big body as before.

uvicorn takes the protocol class as its `http` setting; `connection_made(transport)` is
asyncio's own protocol interface.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

HOLD_AT_MOST = 64 * 1024
"""Bytes held for the next turn at most: asyncio's default high-water mark."""


class OneWriteTransport(asyncio.Transport):
    """A transport whose writes within one turn of the loop go out as one write."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._transport = transport
        self._loop = loop
        self._waiting: list[bytes] = []
        self._waiting_bytes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._waiting:
            self._loop.call_soon(self.flush)
        self._waiting.append(bytes(data))
        self._waiting_bytes += len(data)
        if self._waiting_bytes > HOLD_AT_MOST:
            self.flush()

    def flush(self) -> None:
        """Write what is waiting, in one write."""
        if not self._waiting:
            return
        data = self._waiting[0] if len(self._waiting) == 1 else b"".join(self._waiting)
        self._waiting.clear()
        self._waiting_bytes = 0
        if not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def abort(self) -> None:
        self._waiting.clear()
        self._waiting_bytes = 0
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + self._waiting_bytes

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.flush()
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self.flush()
        self._transport.write_eof()


class OneWriteH11Protocol(H11Protocol):
    """uvicorn's h11 protocol on a `OneWriteTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(OneWriteTransport(transport, asyncio.get_running_loop()))

    def eof_received(self) -> None:
        # The client has sent all it will (a half-close): asyncio closes the connection as
        # this returns, so an answer written in this turn goes out now or never.
        if isinstance(self.transport, OneWriteTransport):
            self.transport.flush()
        super().eof_received()
