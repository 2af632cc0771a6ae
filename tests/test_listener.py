"""The socket `leadrelay serve` listens on (`leadrelay.preflight.bind_listener`): the
connections it accepts send small writes at once (Nagle's algorithm off).

With Nagle's algorithm on, a response written in two parts (uvicorn writes the headers, then the
body) held its body back until the client acknowledged the headers, which Linux delays by up to
40 ms: every request a consumer made to another service (ingest's lead keys, once a batch) took
40 ms more, and above about 15 leads/s a lead took 250 ms instead of 25 to reach its SDR.
"""

from __future__ import annotations

import asyncio
import socket

from leadrelay.preflight import bind_listener


async def _nodelay_of_an_accepted_connection(listener: socket.socket) -> int:
    seen: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def accepted(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection: socket.socket = writer.get_extra_info("socket")
        seen.set_result(connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        writer.close()

    # As uvicorn serves the listener it is given: asyncio's server on the bound socket.
    server = await asyncio.start_server(accepted, sock=listener)
    try:
        host, port = listener.getsockname()[:2]
        _reader, writer = await asyncio.open_connection(host, port)
        try:
            return await asyncio.wait_for(seen, timeout=10)
        finally:
            writer.close()
    finally:
        server.close()
        await server.wait_closed()


def test_the_connections_a_service_accepts_have_nagles_algorithm_off() -> None:
    listener = bind_listener("127.0.0.1", 0, advice="")
    assert asyncio.run(_nodelay_of_an_accepted_connection(listener)) != 0
