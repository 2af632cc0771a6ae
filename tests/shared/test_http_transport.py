"""The lean httpx transport (`shared.http_transport`) against a real local HTTP server."""

from __future__ import annotations

import asyncio
import ssl
from asyncio.selector_events import _SelectorSocketTransport
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from shared.http_transport import DirectClient, lean_transport


@dataclass
class Server:
    """A keep-alive HTTP/1.1 server that answers each request `200 ok` (after `delay`) and
    notes every read it made and every connection it accepted."""

    reads: list[bytes] = field(default_factory=list)
    connections: int = 0
    delay: float = 0.0
    close_after_answer: bool = False
    answer: bytes = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
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
            writer.write(self.answer)
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


def _self_signed(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A certificate for `name` signed by its own key: (certificate, key) as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256()))
    certificate_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    certificate_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    return certificate_file, key_file


async def test_https_goes_through_tls_with_the_server_name_checked(tmp_path: Path) -> None:
    """Connected to the address, the certificate checked against the name (as
    `shared.outbound` pins a checked address and keeps the name for TLS)."""
    certificate, key = _self_signed(tmp_path, "hooks.example.test")
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(certificate, key)
    trusting = ssl.create_default_context(cafile=str(certificate))
    server = Server()
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=server_side)
    port = listener.sockets[0].getsockname()[1]
    try:
        async with httpx.AsyncClient(transport=lean_transport(verify=trusting)) as client:
            answer = await client.post(
                f"https://127.0.0.1:{port}/hook", content=b"{}",
                headers={"Host": "hooks.example.test"},
                extensions={"sni_hostname": "hooks.example.test"})
            assert (answer.status_code, answer.text) == (200, "ok")
        async with httpx.AsyncClient(transport=lean_transport(verify=trusting)) as client:
            with pytest.raises(httpx.ConnectError):
                await client.post(f"https://127.0.0.1:{port}/hook", content=b"{}",
                                  extensions={"sni_hostname": "other.example.test"})
    finally:
        for writer in server.writers:
            writer.close()
        listener.close()


async def test_the_direct_client_follows_no_redirect_keeps_no_cookie_and_times_out() -> None:
    server = Server(answer=b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\n"
                           b"Set-Cookie: session=abc\r\nContent-Length: 5\r\n\r\nmoved")
    async with serving(server) as url, DirectClient(
            lean_transport(), timeout=httpx.Timeout(0.3),
            headers={"User-Agent": "leadrelay-test"}) as client:
        for _ in range(2):
            answer = await client.request("POST", f"{url}/hook", content=b"{}",
                                          headers={"X-Event": "offer"})
            assert (answer.status_code, answer.text) == (302, "moved")
        assert answer.request.url.path == "/hook"
        server.delay = 1.0
        with pytest.raises(httpx.ReadTimeout):
            await client.request("POST", f"{url}/slow", content=b"{}")
    heads = [read.split(b"\r\n\r\n")[0].lower() for read in server.reads]
    assert len(heads) == 3, "the redirect was not followed"
    assert all(b"user-agent: leadrelay-test" in head and b"x-event: offer" in head
               for head in heads[:2])
    assert not any(b"cookie" in head for head in heads), "no cookie was kept"
