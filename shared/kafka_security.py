"""How leadrelay's Kafka clients authenticate, and the start-up check that they can.

`client_security` gives the keyword arguments every aiokafka client (producer, consumer, admin)
takes for the configured security protocol: a TLS context from the CA file and the optional
client certificate, the SASL mechanism and credentials. `check_broker_access` connects to the
bootstrap servers the way the clients will, before a service starts: a refused login, an
unsupported mechanism or a failed TLS handshake stops it at once with one line; an unreachable
broker is retried until `kafka_startup_timeout_seconds`. aiokafka itself reports all of these
as "Unable to bootstrap" and retries for ever.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from typing import Any

from aiokafka.conn import create_conn
from aiokafka.errors import (
    AuthenticationFailedError,
    IllegalSaslStateError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.protocol.metadata import MetadataRequest

from shared.settings import ServiceSettings

REFUSALS = (SaslAuthenticationFailed, AuthenticationFailedError, IllegalSaslStateError,
            UnsupportedSaslMechanismError)
"""Errors that another try cannot fix."""


class BrokerAccessError(RuntimeError):
    """The service cannot use the broker; the message is one line meant for the operator."""


def client_security(settings: ServiceSettings) -> dict[str, Any]:
    """The aiokafka keyword arguments for the configured security protocol."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol.endswith("SSL"):
        password = settings.kafka_ssl_key_password.get_secret_value() or None
        options["ssl_context"] = create_ssl_context(
            cafile=settings.kafka_ssl_cafile, certfile=settings.kafka_ssl_certfile,
            keyfile=settings.kafka_ssl_keyfile, password=password,
        )
    if protocol.startswith("SASL_"):
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        options["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return options


async def check_broker_access(settings: ServiceSettings) -> None:
    """Return once one bootstrap server accepts a connection and the login; else raise
    `BrokerAccessError` (at once for a refusal, after the start-up timeout otherwise)."""
    security = client_security(settings)
    servers = [server.strip() for server in settings.kafka_bootstrap_servers.split(",")
               if server.strip()]
    deadline = time.monotonic() + settings.kafka_startup_timeout_seconds
    last_problem = "no bootstrap server given"
    while True:
        for server in servers:
            host, _, port = server.rpartition(":")
            try:
                connection = await create_conn(
                    host.strip("[]"), int(port), request_timeout_ms=5_000, **security)
            except REFUSALS as error:
                raise BrokerAccessError(_refusal(settings, server, error)) from None
            except ssl.SSLError as error:
                raise BrokerAccessError(
                    f"TLS handshake with Kafka broker {server} failed: {error.reason or error} "
                    f"(LEADRELAY_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol}, "
                    f"LEADRELAY_KAFKA_SSL_CAFILE={settings.kafka_ssl_cafile or 'system CAs'})"
                ) from None
            except (OSError, KafkaError, TimeoutError, ValueError) as error:
                last_problem = f"{server}: {_describe(error)}"
                continue
            try:
                # A SASL listener answers ApiVersions before any login, nothing after it.
                await connection.send(MetadataRequest([]))
            except (KafkaError, OSError, TimeoutError) as error:
                last_problem = f"{server}: {_describe(error)}"
                continue
            finally:
                connection.close()
            return
        if time.monotonic() >= deadline:
            raise BrokerAccessError(
                f"no Kafka broker reachable after {settings.kafka_startup_timeout_seconds:g} s "
                f"(LEADRELAY_KAFKA_BOOTSTRAP_SERVERS={settings.kafka_bootstrap_servers}, "
                f"LEADRELAY_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol}); "
                f"last: {last_problem}")
        await asyncio.sleep(min(0.5, max(0.0, deadline - time.monotonic())))


def _refusal(settings: ServiceSettings, server: str, error: KafkaError) -> str:
    mechanism = settings.kafka_sasl_mechanism
    if isinstance(error, UnsupportedSaslMechanismError):
        return (f"Kafka broker {server} does not offer {mechanism} "
                f"(LEADRELAY_KAFKA_SASL_MECHANISM): {_describe(error)}")
    return (f"Kafka broker {server} refused user {settings.kafka_sasl_username!r} ({mechanism}): "
            f"wrong user name or password (LEADRELAY_KAFKA_SASL_USERNAME, "
            f"LEADRELAY_KAFKA_SASL_PASSWORD); the broker said: {_describe(error)}")


def _describe(error: BaseException) -> str:
    """The error's own words on one line, without aiokafka's `[Error N] Name:` prefix."""
    text = " ".join(str(error).split())
    name = type(error).__name__
    if text.startswith("[Error"):
        text = text.partition(": ")[2]
    text = text.removeprefix(f"{name}: ")
    return f"{name}: {text}" if text else name
