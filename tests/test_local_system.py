"""The local webhook receiver the demo, the end-to-end tests and the benchmarks post to."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import httpx

from leadrelay.local_system import webhook_receiver


def test_a_post_cut_off_before_its_body_is_not_recorded() -> None:
    with webhook_receiver() as receiver:
        url = urlsplit(receiver.new_endpoint())
        with socket.create_connection((url.hostname or "127.0.0.1", url.port or 80)) as cut:
            cut.sendall(f"POST {url.path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                        "\r\nContent-Length: 200\r\n\r\n".encode())
            cut.shutdown(socket.SHUT_WR)  # as a sender killed mid-request
            assert cut.recv(100) == b""  # the receiver closed without answering
        whole = httpx.post(receiver.new_endpoint(), json={"lead_id": "lead-1"})
        time.sleep(0.05)
    assert whole.status_code == 200
    assert [body for _, body in receiver.received] == [{"lead_id": "lead-1"}]
