"""Outbound URLs (webhooks) guarded against server-side request forgery.

A URL is checked when it is registered and again each time something is sent to it:
- `http` or `https` only, with a host and no `user:password@` (credentials would be stored
  and shown with the URL, and sent as Basic auth);
- a numeric host must be a plain dotted quad: `2130706433`, `0x7f000001` or `127.1` (which
  resolvers read as 127.0.0.1) are refused;
- every address the host resolves to must be global (`ipaddress`'s `is_global`): loopback,
  private, link-local (169.254.169.254, the cloud metadata service), shared (100.64.0.0/10),
  reserved and multicast ones are refused, and so is an IPv6 address that embeds one (IPv4-
  mapped, NAT64, 6to4, Teredo).
A URL on `allowed` (an exact URL, or an origin such as `http://127.0.0.1:8709` that covers its
paths) may reach any address: that is how a local receiver is let in, and nothing else.

`post` and `get` connect to the address that was checked, not to what the name resolves to a
moment later, so a DNS answer that changes between the check and the connection (rebinding)
cannot move the call: the URL's host becomes that address, the `Host` header keeps the name, and for
https the TLS server name (SNI, and the certificate check) stays the name too. httpx pools
connections by scheme, address and port, not by that name: an https connection is therefore
closed after its call (`Connection: close`), so a call to another name served from the same
address never goes over a TLS session made for the first. Plain http connections are kept.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

import httpx

from shared.http_transport import HttpClient

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""`(host, port) -> addresses`: the system resolver unless a test gives its own."""

_NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class RefusedDestinationError(ValueError):
    """The URL may not be called; the message says why, for the person who registered it."""


@dataclass(frozen=True)
class Destination:
    """A checked URL and the address its call must connect to."""

    url: httpx.URL
    address: str


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def embedded_ipv4(address: Address) -> Address:
    """The IPv4 address an IPv6 address carries (mapped, NAT64, 6to4, Teredo), else itself."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if address.sixtofour is not None:
            return address.sixtofour
        if address.teredo is not None:
            return address.teredo[1]
    return address


def is_public(address: Address) -> bool:
    inner = embedded_ipv4(address)
    return address.is_global and inner.is_global and not inner.is_multicast


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    default = {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, url.port or default


class DestinationPolicy:
    """Which outbound URLs may be called; `allowed` are exact URLs or origins."""

    def __init__(self, allowed: Iterable[str] = (), *, resolver: Resolver | None = None) -> None:
        self.resolver = resolver or system_resolver
        self._urls: set[str] = set()
        self._origins: set[tuple[str, str, int | None]] = set()
        for entry in allowed:
            url = httpx.URL(entry.strip())
            if url.raw_path in (b"", b"/") and not url.query:
                self._origins.add(_origin(url))
            else:
                self._urls.add(str(url))

    def allowed(self, url: httpx.URL) -> bool:
        return str(url) in self._urls or _origin(url) in self._origins

    def parse(self, url: str) -> httpx.URL:
        """`url` parsed, or `RefusedDestinationError` when its form alone rules it out."""
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL as error:
            raise RefusedDestinationError(f"not a valid URL: {error}") from None
        if parsed.scheme not in ("http", "https"):
            raise RefusedDestinationError("only http:// and https:// URLs can be called")
        if not parsed.host:
            raise RefusedDestinationError("the URL has no host")
        if parsed.userinfo:
            raise RefusedDestinationError(
                "the URL carries a user name or password; credentials are not accepted in "
                "webhook URLs (use the signing secret to authenticate calls)"
            )
        labels = parsed.host.rstrip(".").split(".")
        if ":" not in parsed.host and _NUMERIC_LABEL.match(labels[-1]):
            try:
                ipaddress.IPv4Address(parsed.host)
            except ValueError:
                raise RefusedDestinationError(
                    f"{parsed.host!r} is not a dotted-quad IPv4 address (numeric, octal or "
                    "hexadecimal forms are not accepted)"
                ) from None
        return parsed

    async def check_registration(self, url: str) -> None:
        """Refuse `url` when it is registered if it may not be called. An allowed URL is
        taken as it is: its name may resolve only where it is used."""
        parsed = self.parse(url)
        if not self.allowed(parsed):
            await self.check(url)

    async def check(self, url: str) -> Destination:
        """The destination of `url` if it may be called, else `RefusedDestinationError`."""
        parsed = self.parse(url)
        host = parsed.host
        try:
            literal: Address | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        if literal is not None:
            addresses: list[Address] = [literal]
        else:
            try:
                found = await self.resolver(host, parsed.port or 443)
            except OSError as error:
                raise RefusedDestinationError(f"cannot resolve {host}: {error}") from None
            addresses = [ipaddress.ip_address(address.split("%")[0]) for address in found]
            if not addresses:
                raise RefusedDestinationError(f"{host} resolves to no address")
        if not self.allowed(parsed):
            for address in addresses:
                if not is_public(address):
                    named = "" if literal is not None else f"{host} resolves to "
                    raise RefusedDestinationError(
                        f"{named}{address}, which is not a public internet address "
                        "(loopback, private, link-local, shared or reserved)"
                    )
        return Destination(parsed, str(addresses[0]))


async def post(
    client: HttpClient, destination: Destination, *, content: bytes,
    headers: Mapping[str, str],
) -> httpx.Response:
    """POST `content` to `destination`, connecting to its checked address only."""
    return await _send(client, "POST", destination, content=content, headers=headers)


async def get(
    client: HttpClient, destination: Destination, *, headers: Mapping[str, str],
) -> httpx.Response:
    """GET `destination` (its query included), connecting to its checked address only."""
    return await _send(client, "GET", destination, content=None, headers=headers)


async def _send(
    client: HttpClient, method: str, destination: Destination, *,
    content: bytes | None, headers: Mapping[str, str],
) -> httpx.Response:
    url = destination.url
    pinned = {**headers, "Host": url.netloc.decode("ascii")}
    extensions = {}
    if url.scheme == "https":
        extensions["sni_hostname"] = url.host
        pinned["Connection"] = "close"
    return await client.request(method, url.copy_with(host=destination.address),
                                content=content, headers=pinned, extensions=extensions)
