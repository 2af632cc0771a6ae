"""CPU per webhook call: httpx as it comes, on `shared.http_transport.lean_transport`, and
`DirectClient` on it (what the router's notifier uses).

A receiver in a process of its own answers `200` to every POST; this process sends `--calls`
POSTs of a 1-KiB JSON body, `--in-flight` at a time, over a pool of `--pool` connections (the
router's `notify_concurrency` is 100), with each client in turn, and prints the CPU this
process spent per call (user + system).

    python bench/http_client_cpu.py
    python bench/http_client_cpu.py --calls 5000 --in-flight 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.http_transport import DirectClient, HttpClient, lean_transport

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


def serve(port: int, ready: Any) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                              if line.lower().startswith(b"content-length:"))
                await reader.readexactly(length)
                writer.write(ANSWER)
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port)
        ready.set()
        await server.serve_forever()

    asyncio.run(main())


async def calls(url: str, client: HttpClient, count: int, in_flight: int) -> float:
    body = json.dumps({"type": "assignment.offered", "padding": "x" * 1000}).encode()
    gate = asyncio.Semaphore(in_flight)
    async with client:  # type: ignore[attr-defined]

        async def one() -> None:
            async with gate:
                answer = await client.request("POST", url, content=body,
                                              headers={"Content-Type": "application/json"})
                answer.raise_for_status()

        await asyncio.gather(*(one() for _ in range(100)))  # warm the pool
        started = time.process_time()
        await asyncio.gather(*(one() for _ in range(count)))
        return (time.process_time() - started) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--in-flight", type=int, default=10)
    parser.add_argument("--pool", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    port = 18000 + int(time.time()) % 1000
    ready = multiprocessing.get_context("spawn").Event()
    receiver = multiprocessing.get_context("spawn").Process(target=serve, args=(port, ready),
                                                            daemon=True)
    receiver.start()
    ready.wait(10)
    limits = httpx.Limits(max_connections=args.pool, max_keepalive_connections=args.pool)
    url = f"http://127.0.0.1:{port}/hook"
    try:
        for _ in range(args.rounds):
            for name, make in (
                ("httpx", lambda: httpx.AsyncClient(
                    transport=httpx.AsyncHTTPTransport(limits=limits), timeout=10)),
                ("lean", lambda: httpx.AsyncClient(
                    transport=lean_transport(limits=limits), timeout=10)),
                ("direct", lambda: DirectClient(lean_transport(limits=limits),
                                                timeout=httpx.Timeout(10))),
            ):
                per_call = asyncio.run(calls(url, make(), args.calls, args.in_flight))
                print(f"{name:>6}: {per_call * 1e6:6.0f} us CPU per call "
                      f"({args.in_flight} in flight, pool of {args.pool})", flush=True)
    finally:
        receiver.terminate()


if __name__ == "__main__":
    main()
