"""The ports the harness gives its servers: never ones the kernel may lend a client meanwhile."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from leadrelay.broker import free_port

EPHEMERAL_PORTS = Path("/proc/sys/net/ipv4/ip_local_port_range")


def test_a_free_port_is_below_the_range_outgoing_connections_take_their_source_ports_from(
) -> None:
    # A server killed -9 and started again (services, Kafka brokers, PostgreSQL in the fault
    # benchmark) must find its port free: one from the ephemeral range can be taken meanwhile
    # as the source port of a client's new connection, and the restart then fails to bind.
    if not EPHEMERAL_PORTS.exists():
        pytest.skip("the kernel's ephemeral port range is known on Linux only")
    low, high = (int(value) for value in EPHEMERAL_PORTS.read_text().split())
    ports = {free_port() for _ in range(20)}
    assert all(port < low or port > high for port in ports), (ports, low, high)
    for port in ports:
        with socket.socket() as server:
            server.bind(("127.0.0.1", port))
