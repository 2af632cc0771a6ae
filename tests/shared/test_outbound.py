"""The SSRF guard of outbound URLs: what is refused and why, and that a call connects to the
address that was checked (DNS rebinding cannot move it)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
from collections.abc import AsyncIterator

import httpx
import pytest

from leadrelay.broker import free_port
from shared import outbound
from shared.outbound import DestinationPolicy, RefusedDestinationError, is_public

PUBLIC = "93.184.216.34"


@pytest.mark.parametrize(
    ("address", "public"),
    [("127.0.0.1", False), ("10.1.2.3", False), ("192.168.0.9", False),
     ("169.254.169.254", False), ("100.100.100.200", False), ("100.64.0.1", False),
     ("0.0.0.0", False), ("224.0.0.1", False), ("::1", False), ("fd00::1", False),
     ("fe80::1", False), ("::ffff:127.0.0.1", False), ("::ffff:10.0.0.1", False),
     ("64:ff9b::7f00:1", False), ("2002:7f00:1::", False),
     (PUBLIC, True), ("2606:4700::1111", True)],
)
def test_only_global_addresses_are_public(address: str, public: bool) -> None:
    assert is_public(ipaddress.ip_address(address)) is public


def answering(*answers: list[str]) -> outbound.Resolver:
    """A resolver giving each answer in turn (the last one from then on)."""
    given = list(answers)

    async def resolve(host: str, port: int) -> list[str]:
        return given.pop(0) if len(given) > 1 else given[0]

    return resolve


@pytest.mark.parametrize(
    ("url", "reason"),
    [("http://10.0.0.1/hook", "not a public internet address"),
     ("http://169.254.169.254/latest/meta-data", "not a public internet address"),
     ("http://100.100.100.200/", "not a public internet address"),
     ("http://[::ffff:127.0.0.1]/", "not a public internet address"),
     ("http://0x7f000001/", "not a dotted-quad IPv4 address"),
     ("http://2130706433/", "not a dotted-quad IPv4 address"),
     ("http://127.1/", "not a dotted-quad IPv4 address"),
     ("http://0177.0.0.1/", "not a valid URL"),
     ("http://user:secret@hooks.example.com/", "user name or password"),
     ("ftp://hooks.example.com/", "only http:// and https://"),
     ("http://loopback.example/", "loopback.example resolves to 127.0.0.1")],
)
async def test_refused_urls_say_why(url: str, reason: str) -> None:
    policy = DestinationPolicy(resolver=answering(["127.0.0.1"]))
    with pytest.raises(RefusedDestinationError, match=re.escape(reason)):
        await policy.check(url)
    with pytest.raises(RefusedDestinationError, match=re.escape(reason)):
        await policy.check_registration(url)


async def test_a_name_with_one_private_address_among_public_ones_is_refused() -> None:
    policy = DestinationPolicy(resolver=answering([PUBLIC, "10.0.0.7"]))
    with pytest.raises(RefusedDestinationError, match=re.escape("10.0.0.7")):
        await policy.check("https://hooks.example.com/x")


async def test_an_allowed_origin_or_url_lets_exactly_that_in() -> None:
    policy = DestinationPolicy(["http://127.0.0.1:8709", "http://localhost:9000/only"],
                               resolver=answering(["127.0.0.1"]))
    assert (await policy.check("http://127.0.0.1:8709/sdr/ada")).address == "127.0.0.1"
    assert (await policy.check("http://localhost:9000/only")).address == "127.0.0.1"
    for refused in ("http://127.0.0.1:8710/sdr/ada", "https://127.0.0.1:8709/",
                    "http://localhost:9000/other", "http://u:p@127.0.0.1:8709/"):
        with pytest.raises(RefusedDestinationError):
            await policy.check(refused)


async def test_the_call_goes_to_the_checked_address_with_the_name_kept() -> None:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)

    policy = DestinationPolicy(resolver=answering([PUBLIC], ["127.0.0.1"]))
    destination = await policy.check("https://hooks.example.com:8443/in?x=1")
    async with httpx.AsyncClient(transport=httpx.MockTransport(record)) as client:
        await outbound.post(client, destination, content=b"{}", headers={"X-A": "1"})
    [request] = seen
    assert str(request.url) == f"https://{PUBLIC}:8443/in?x=1"
    assert request.headers["host"] == "hooks.example.com:8443"
    assert request.extensions["sni_hostname"] == "hooks.example.com"
    assert request.headers["connection"] == "close"  # the pool does not know the name


@pytest.fixture
async def loopback_listener() -> AsyncIterator[tuple[int, list[str]]]:
    """A socket listening on loopback; the list records every connection it accepts."""
    connections: list[str] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(str(writer.get_extra_info("peername")))
        writer.close()

    port = free_port()
    server = await asyncio.start_server(accept, "127.0.0.1", port)
    try:
        yield port, connections
    finally:
        server.close()
        await server.wait_closed()


async def test_rebinding_to_loopback_after_the_check_reaches_nothing(
    loopback_listener: tuple[int, list[str]],
) -> None:
    """`localhost` answers a public address when checked (a rebinding DNS server's first
    answer); the system resolver, which the call would use if it resolved again, says
    127.0.0.1, where the listener waits."""
    port, connections = loopback_listener
    policy = DestinationPolicy(resolver=answering([PUBLIC]))
    destination = await policy.check(f"http://localhost:{port}/hook")
    async with httpx.AsyncClient(timeout=0.5) as client:
        # The public address may be unreachable here, or answered by the sandbox's network:
        # either way the call must not reach the loopback listener.
        with contextlib.suppress(httpx.TransportError):
            await outbound.post(client, destination, content=b"{}", headers={})
    await asyncio.sleep(0.1)
    assert connections == []
