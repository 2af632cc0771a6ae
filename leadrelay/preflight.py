"""Checks `leadrelay serve` and `leadrelay up` make before a service starts, each failure one
line naming the setting or the address and what to do.

The settings themselves (unparsable or unsupported URLs, bad values) are checked when they are
loaded (`shared.settings.load_settings`); these are the checks that need the outside world: the
listening port, the database server, the broker. Each finishes within a few seconds, so a
service that cannot start says why at once instead of a traceback or a minute of retries. The
one wait: a PostgreSQL server that answers it is starting up (recovering after a crash, say) will
serve soon, so a service restarted meanwhile waits for it, up to a minute.
"""

from __future__ import annotations

import asyncio
import errno
import socket

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared.settings import ServiceSettings

DATABASE_TIMEOUT_SECONDS = 5.0
"""How long the database server has to accept a connection and a login."""

DATABASE_STARTING_SECONDS = 60.0
"""How long a PostgreSQL server that says it is starting up (or recovering after a crash) is
waited for: it exists and will serve, so a service started meanwhile waits instead of failing."""


class StartupError(RuntimeError):
    """A service cannot start; the message is one line meant for the operator."""


def bind_listener(host: str, port: int, *, advice: str) -> socket.socket:
    """A socket listening on `host:port`, for the server to take over; a taken port or an
    address this machine does not have is a `StartupError`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Named TCP, not left to the default: asyncio turns Nagle's algorithm off only on the
    # connections of a socket whose protocol says TCP. With it on, a response written in two
    # parts (headers, body) waited for the client's delayed acknowledgement, 40 ms.
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        listener.bind((host, port))
        listener.listen(2048)
    except OSError as error:
        listener.close()
        where = f"[{host}]:{port}" if family == socket.AF_INET6 else f"{host}:{port}"
        if error.errno == errno.EADDRINUSE:
            raise StartupError(
                f"cannot listen on {where}: the port is already in use; {advice}") from None
        raise StartupError(
            f"cannot listen on {where}: {error.strerror or error}; check the host and "
            "the port (LEADRELAY_HOST, LEADRELAY_PORT)") from None
    listener.set_inheritable(True)
    return listener


def check_port_free(host: str, port: int, *, advice: str) -> None:
    """Raise `StartupError` if `host:port` cannot be listened on now."""
    bind_listener(host, port, advice=advice).close()


async def check_database(settings: ServiceSettings) -> None:
    """Connect to the service's PostgreSQL server and log in once; an SQLite file needs no
    server (its directory is made when the service opens it)."""
    url = make_url(settings.database_url)
    if url.get_backend_name() != "postgresql":
        return
    where = f"PostgreSQL at {url.host}:{url.port or 5432}"
    variable = settings.database_url_variable
    engine = create_async_engine(url, hide_parameters=True, pool_size=1, max_overflow=0)
    try:
        await _connect_once_started(engine)
    except TimeoutError:
        raise StartupError(
            f"{where} did not answer within {DATABASE_TIMEOUT_SECONDS:g} s ({variable}): check "
            "the host, the port and the firewall between them") from None
    except Exception as error:  # noqa: BLE001 - every failure becomes the operator's one line
        raise StartupError(_database_problem(where, variable, url.username, url.database,
                                             error)) from None
    finally:
        await engine.dispose()


async def _connect_once_started(engine: AsyncEngine) -> None:
    """Connect and log in, waiting out a server that is still starting up (SQLSTATE 57P03)."""
    waited_since = asyncio.get_running_loop().time()
    while True:
        try:
            async with asyncio.timeout(DATABASE_TIMEOUT_SECONDS), engine.connect():
                return
        except DBAPIError as error:
            starting = getattr(_root_cause(error), "sqlstate", None) == "57P03"
            elapsed = asyncio.get_running_loop().time() - waited_since
            if not starting or elapsed > DATABASE_STARTING_SECONDS:
                raise
        await asyncio.sleep(0.5)


def _database_problem(
    where: str, variable: str, user: str | None, database: str | None, error: BaseException
) -> str:
    cause = _root_cause(error)
    name = type(cause).__name__
    if isinstance(cause, ConnectionRefusedError):
        return (f"cannot connect to {where} ({variable}): connection refused; start the server "
                "or correct the host and port in the URL")
    if isinstance(cause, socket.gaierror):
        return f"cannot resolve the host of {where} ({variable}): {cause.strerror or cause}"
    if isinstance(cause, OSError):
        return f"cannot connect to {where} ({variable}): {cause.strerror or cause}"
    if name in {"InvalidPasswordError", "InvalidAuthorizationSpecificationError"}:
        return (f"{where} refused user {user!r} ({variable}): wrong user name or password, or "
                "no pg_hba.conf entry for this host")
    if name == "InvalidCatalogNameError":
        return (f"{where} has no database {database!r} ({variable}): create it, or correct "
                "the URL")
    first_line = (str(cause).strip().splitlines() or [""])[0]
    return f"cannot use {where} ({variable}): {name}: {first_line}"


def _root_cause(error: BaseException) -> BaseException:
    """The driver's own exception under SQLAlchemy's wrappers."""
    seen: set[int] = set()
    while id(error) not in seen:
        seen.add(id(error))
        inner = getattr(error, "orig", None) or error.__cause__
        if not isinstance(inner, BaseException):
            break
        error = inner
    return error


def check_broker(settings: ServiceSettings) -> None:
    """Raise `StartupError` when the service cannot use its broker (refused login, failed
    TLS, nobody answering within `kafka_startup_timeout_seconds`)."""
    from shared.kafka_security import BrokerAccessError, check_broker_access

    try:
        asyncio.run(check_broker_access(settings))
    except BrokerAccessError as error:
        raise StartupError(str(error)) from None
