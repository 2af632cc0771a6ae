"""`check_database` waits for a PostgreSQL server that says it is starting up (a service
restarted while the database recovers from a crash), and still fails at once on anything else.

The server in front is a stand-in speaking PostgreSQL's wire protocol: it answers the first
connections with the server's own "starting up" error (SQLSTATE 57P03), then relays every byte
to the real PostgreSQL behind it."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator

import pytest

from leadrelay.preflight import StartupError, check_database
from shared.settings import ServiceSettings
from tests.conftest import PG_ADMIN_DSN

pytestmark = pytest.mark.postgres


def _starting_up() -> bytes:
    fields = (b"SFATAL\0VFATAL\0C57P03\0Mthe database system is starting up\0"
              b"Fpostmaster.c\0\0")
    return b"E" + struct.pack("!I", len(fields) + 4) + fields


async def _read_startup(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the client's startup message, declining TLS first if it asks."""
    while True:
        length = struct.unpack("!I", await reader.readexactly(4))[0]
        body = await reader.readexactly(length - 4)
        if struct.unpack("!I", body[:4])[0] == 80877103:  # SSLRequest
            writer.write(b"N")
            await writer.drain()
            continue
        return


@contextlib.asynccontextmanager
async def recovering_postgres(refusals: int) -> AsyncIterator[tuple[int, list[int]]]:
    """A port whose first `refusals` connections hear "starting up"; later ones reach the real
    server. Yields the port and the list of connections answered so far (one entry each)."""
    answered: list[int] = []

    async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await source.read(65536):
                sink.write(chunk)
                await sink.drain()
        sink.close()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        answered.append(len(answered))
        if len(answered) <= refusals:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                await _read_startup(reader, writer)
                writer.write(_starting_up())
                await writer.drain()
            writer.close()
            return
        real_reader, real_writer = await asyncio.open_connection("127.0.0.1", 5432)
        await asyncio.gather(pipe(reader, real_writer), pipe(real_reader, writer))

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    async with server:
        yield server.sockets[0].getsockname()[1], answered


def _settings(port: int) -> ServiceSettings:
    return ServiceSettings(service_name="scorer",
                           database_url=f"postgresql://postgres@127.0.0.1:{port}/postgres")


async def test_a_server_starting_up_is_waited_for(postgres_available: bool) -> None:
    if not postgres_available or "127.0.0.1:5432" not in PG_ADMIN_DSN:
        pytest.skip("needs the PostgreSQL server at 127.0.0.1:5432")
    async with recovering_postgres(refusals=3) as (port, answered):
        await check_database(_settings(port))
    assert len(answered) == 4


async def test_a_server_starting_up_for_too_long_is_a_startup_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("leadrelay.preflight.DATABASE_STARTING_SECONDS", 1.0)
    async with recovering_postgres(refusals=1000) as (port, answered):
        with pytest.raises(StartupError, match="the database system is starting up"):
            await check_database(_settings(port))
    assert 2 <= len(answered) < 10
