"""The libraries' internals the code relies on, each checked where it is used, so that a new
version that moves one fails here, loudly and by name, rather than somewhere downstream.

pyproject.toml bounds each of these libraries below the next version nobody has checked; to
raise a bound, install the new version, run this module, and mend what it names.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, Header, Request
from pydantic import BaseModel


class Body(BaseModel):
    email: str


MOVED = "{library} changed: {what} ({used_by} relies on it); see tests/test_library_internals.py"


def moved(library: str, what: str, used_by: str) -> str:
    return MOVED.format(library=library, what=what, used_by=used_by)


# --- SQLAlchemy's aiosqlite adapter: shared/sqlite_driver.py stands in for aiosqlite --------------


def test_sqlalchemy_drives_the_aiosqlite_connection_through_the_attributes_we_imitate() -> None:
    from sqlalchemy.dialects.sqlite import aiosqlite as adapter

    source = inspect.getsource(adapter)
    for attribute, role in (
        ("._connection._tx.put_nowait(", "sets the isolation level through aiosqlite's queue"),
        ("._connection._conn", "reaches the sqlite3 connection"),
        ("if self._connection._connection:", "checks the connection is open"),
        ("self._connection.stop", "stops the connection"),
        ("self._connection.create_function(", "registers SQL functions"),
    ):
        assert attribute in source, moved("SQLAlchemy", f"the aiosqlite adapter no longer "
                                          f"uses {attribute!r} ({role})", "shared/sqlite_driver.py")
    from sqlalchemy.ext.asyncio import create_async_engine

    assert "async_creator" in inspect.getsource(create_async_engine), moved(
        "SQLAlchemy", "create_async_engine takes no async_creator", "shared/db.py")


async def test_our_sqlite_driver_runs_statements_and_changes_isolation_level(tmp_path: Any) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from shared import sqlite_driver

    path = str(tmp_path / "internals.db")
    engine = create_async_engine(f"sqlite+aiosqlite:///{path}",
                                 async_creator=sqlite_driver.connect(path, timeout=5))
    try:
        async with engine.connect() as connection:
            autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
            assert (await autocommit.execute(text("SELECT 41 + 1"))).scalar() == 42
        async with engine.begin() as connection:
            await connection.execute(text("CREATE TABLE t (x INTEGER)"))
            await connection.execute(text("INSERT INTO t VALUES (1)"))
        async with engine.connect() as connection:
            assert (await connection.execute(text("SELECT count(*) FROM t"))).scalar() == 1
    finally:
        await engine.dispose()


# --- FastAPI: Dependant, ModelField.validate, route contexts, get_flat_params -------------------


def test_fastapi_dependant_has_the_fields_the_lean_handler_reads() -> None:
    from fastapi.dependencies.models import Dependant

    fields = {field.name for field in dataclasses.fields(Dependant)}
    wanted = {
        "path_params", "query_params", "header_params", "cookie_params", "body_params",
        "dependencies", "name", "call", "request_param_name", "websocket_param_name",
        "http_connection_param_name", "response_param_name", "background_tasks_param_name",
        "security_scopes_param_name", "own_oauth_scopes",
    }
    assert wanted <= fields | set(dir(Dependant)), moved(
        "FastAPI", f"Dependant lost {sorted(wanted - fields - set(dir(Dependant)))}",
        "services/ingest/api/lean_handler.py, shared/auth.py")


def test_fastapi_route_fields_validate_as_the_lean_handler_calls_them() -> None:
    from fastapi.dependencies.utils import get_flat_params
    from fastapi.routing import APIRoute

    async def guard(request: Request) -> None:
        return None

    app = FastAPI()

    @app.post("/x", dependencies=[Depends(guard)])
    async def endpoint(body: Body, x_key: Annotated[str | None, Header()] = None) -> None:
        return None

    [route] = [route for route in app.routes if isinstance(route, APIRoute)]
    value, errors = route.body_field.validate({"email": "a@b.c"})  # type: ignore[union-attr]
    assert (value, errors) == (Body(email="a@b.c"), []), moved(
        "FastAPI", "ModelField.validate(value) -> (value, errors)",
        "services/ingest/api/lean_handler.py")
    _, errors = route.body_field.validate({})  # type: ignore[union-attr]
    assert errors, moved("FastAPI", "ModelField.validate reports no errors",
                         "services/ingest/api/lean_handler.py")
    [header] = route.dependant.header_params
    assert (header.name, header.alias) == ("x_key", "x-key"), moved(
        "FastAPI", "header parameters' name and alias", "services/ingest/api/lean_handler.py")
    assert header.validate("k")[0] == "k"
    [sub] = route.dependant.dependencies
    assert (sub.call, sub.request_param_name) == (guard, "request")
    assert [param.name for param in get_flat_params(route.dependant)] == ["x_key"], moved(
        "FastAPI", "fastapi.dependencies.utils.get_flat_params", "services/ingest/api/route.py")


def test_fastapi_route_contexts_carry_what_the_openapi_security_needs() -> None:
    from fastapi import APIRouter
    from fastapi.routing import iter_route_contexts

    router = APIRouter(prefix="/v1")

    @router.get("/thing/{thing_id}")
    async def thing(thing_id: int) -> None:
        return None

    app = FastAPI()
    app.include_router(router)
    contexts = [context for context in iter_route_contexts(app.routes)
                if getattr(context, "path_format", None) == "/v1/thing/{thing_id}"]
    assert contexts, moved("FastAPI", "iter_route_contexts no longer yields included routes "
                           "with their path_format", "shared/auth.py")
    [context] = contexts
    assert context.methods == {"GET"} and context.include_in_schema
    assert context.dependant.call is thing


# --- Starlette: a body read once is handed back through Request._body and Request._json ----------


async def test_starlette_request_takes_a_body_and_json_already_read() -> None:
    async def receive() -> dict[str, Any]:
        raise AssertionError("the body was read from the stream again")

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [
        (b"content-type", b"application/x-www-form-urlencoded")], "query_string": b""}
    request = Request(scope, receive)
    request._body = b"name=Ada&company=Acme"
    assert await request.body() == b"name=Ada&company=Acme", moved(
        "Starlette", "Request.body() ignores Request._body", "services/ingest/api/route.py")
    form = await request.form()
    assert dict(form) == {"name": "Ada", "company": "Acme"}, moved(
        "Starlette", "Request.form() does not parse Request._body",
        "services/ingest/api/forms.py")
    request._json = {"parsed": True}
    assert await request.json() == {"parsed": True}, moved(
        "Starlette", "Request.json() ignores Request._json", "services/ingest/api/route.py")


# --- aiokafka: the start-up check's connection and the protocol classes ---------------------------


def test_aiokafka_connection_and_protocol_classes_the_start_up_check_uses() -> None:
    from aiokafka.conn import create_conn
    from aiokafka.errors import TopicAlreadyExistsError, for_code
    from aiokafka.protocol import admin
    from aiokafka.protocol.metadata import MetadataRequest

    parameters = inspect.signature(create_conn).parameters
    wanted = {"host", "port", "request_timeout_ms", "security_protocol", "ssl_context",
              "sasl_mechanism", "sasl_plain_username", "sasl_plain_password"}
    assert wanted <= set(parameters), moved(
        "aiokafka", f"create_conn lost {sorted(wanted - set(parameters))}",
        "shared/kafka_security.py")
    assert MetadataRequest([]) is not None
    responses = [value for name, value in vars(admin).items()
                 if name.startswith("CreateTopicsResponse_v")]
    assert responses, moved("aiokafka", "no CreateTopicsResponse_v* classes", "shared/kafka.py")
    for response in responses:
        assert "topic_errors" in response.SCHEMA.names, moved(
            "aiokafka", f"{response.__name__} has no topic_errors", "shared/kafka.py")
    assert for_code(TopicAlreadyExistsError.errno) is TopicAlreadyExistsError


# --- aiokafka: the consumer's offset reset follows a partition's new leader ----------------------


def test_aiokafka_offset_resets_still_go_through_the_method_we_wrap() -> None:
    from aiokafka.consumer.fetcher import Fetcher

    import shared.kafka  # noqa: F401 - installs the wrapper

    used_by = "shared/aiokafka_leaders.py"
    assert getattr(Fetcher._proc_offset_request, "refreshes_metadata", False), moved(
        "aiokafka", "Fetcher._proc_offset_request is not the wrapped one", used_by)
    original = inspect.unwrap(Fetcher._proc_offset_request)
    assert list(inspect.signature(original).parameters) == ["self", "node_id", "topic_data"], \
        moved("aiokafka", "Fetcher._proc_offset_request(self, node_id, topic_data)", used_by)
    resets = inspect.getsource(Fetcher._update_fetch_positions)
    assert "self._proc_offset_request(node_id, topic_data)" in resets, moved(
        "aiokafka", "_update_fetch_positions no longer asks _proc_offset_request", used_by)


async def test_a_stale_leader_answering_an_offset_reset_refreshes_the_metadata() -> None:
    """aiokafka's own request code, given a broker's NotLeaderForPartition answer: the wrapper
    asks for fresh metadata (aiokafka alone would ask the same broker again for 5 minutes)."""
    from types import SimpleNamespace

    from aiokafka.consumer.fetcher import Fetcher
    from aiokafka.errors import NotLeaderForPartitionError

    import shared.kafka  # noqa: F401 - installs the wrapper

    refreshes: list[bool] = []

    async def send(node_id: int, request: Any) -> Any:
        not_leader = NotLeaderForPartitionError.errno
        return SimpleNamespace(API_VERSION=1, topics=[("leads", [(3, not_leader, -1, -1)])])

    client = SimpleNamespace(send=send, force_metadata_update=lambda: refreshes.append(True))
    fetcher = SimpleNamespace(_client=client, _isolation_level=0)
    with pytest.raises(NotLeaderForPartitionError):
        await Fetcher._proc_offset_request(fetcher, 2, {"leads": [(3, -2)]})
    assert refreshes == [True]


# --- httpx: the lean transport replaces AsyncHTTPTransport._pool ---------------------------------


async def test_httpx_transport_sends_through_the_pool_the_lean_transport_replaces() -> None:
    import httpcore
    import httpx

    from shared.http_transport import AsyncioBackend, lean_transport

    for method in (httpx.AsyncHTTPTransport.handle_async_request,
                   httpx.AsyncHTTPTransport.aclose):
        assert "self._pool." in inspect.getsource(method), moved(
            "httpx", f"AsyncHTTPTransport.{method.__name__} no longer uses self._pool",
            "shared/http_transport.py")
    from httpcore._async import connection_pool

    source = inspect.getsource(connection_pool)
    for line in ("closing = self._assign_requests_to_connections()",
                 "len([connection.is_idle() for connection in self._connections])",
                 "queued_requests = [request for request in self._requests if request.is_queued()]",
                 "pool_request.assign_to_connection(connection)",
                 "connection = self.create_connection(origin)",
                 "elif len(self._connections) < self._max_connections:"):
        assert line in source, moved(
            "httpcore", f"AsyncConnectionPool no longer reads {line!r}; LinearPool copies "
            "_assign_requests_to_connections", "shared/http_transport.py")
    transport = lean_transport()
    assert isinstance(transport._pool, httpcore.AsyncConnectionPool)
    assert isinstance(transport._pool._network_backend, AsyncioBackend), moved(
        "httpcore", "AsyncConnectionPool(network_backend=...) is not kept",
        "shared/http_transport.py")
    await transport.aclose()


def test_utc_datetime_writes_and_reads_the_text_sqlalchemys_sqlite_datetime_does() -> None:
    from datetime import UTC, datetime, timedelta, timezone

    from sqlalchemy.dialects.sqlite import DATETIME
    from sqlalchemy.dialects.sqlite.aiosqlite import dialect

    from shared.db import UTCDateTime

    sqlite = dialect()
    ours = UTCDateTime().dialect_impl(sqlite).bind_processor(sqlite)
    theirs = DATETIME().bind_processor(sqlite)
    assert ours is not None and theirs is not None
    paris = timezone(timedelta(hours=1))
    for moment in (
        datetime(2026, 12, 7, 20, 24, 5, 987338, tzinfo=UTC),
        datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),  # no microseconds: still written
        datetime(7, 1, 1, tzinfo=UTC),
        datetime(2026, 6, 1, 0, 30, 0, 1, tzinfo=paris),
    ):
        assert ours(moment) == theirs(moment.astimezone(UTC).replace(tzinfo=None)), moved(
            "SQLAlchemy", f"SQLite's DATETIME no longer writes {ours(moment)!r}",
            "shared/db.py (UTCDateTime.bind_processor)")
    assert ours(None) is None
    with pytest.raises(ValueError, match="naive"):
        ours(datetime(2026, 1, 1))  # noqa: DTZ001
    read = UTCDateTime().dialect_impl(sqlite).result_processor(sqlite, None)
    their_read = DATETIME().result_processor(sqlite, None)
    assert read is not None and their_read is not None
    for text in ("2026-12-07 20:24:05.987338", "2026-01-02 03:04:05.000000",
                 "2026-01-02 03:04:05", "0007-01-01 00:00:00.000000", "2026-01-05",
                 "2026-01-05 09:00:00+00:00", "2026-01-05 09:00:00.123+02:00"):
        parsed = their_read(text)
        expected = parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        assert read(text) == expected and read(text).tzinfo is UTC, moved(
            "SQLAlchemy", f"SQLite's DATETIME no longer reads {text!r} as we do",
            "shared/db.py (UTCDateTime.result_processor)")
    assert read(None) is None


# --- uvicorn: serve binds its socket itself ------------------------------------------------------


def test_uvicorn_server_runs_on_sockets_it_is_given() -> None:
    from uvicorn import Server
    from uvicorn.importer import import_from_string

    assert "sockets" in inspect.signature(Server.run).parameters, moved(
        "uvicorn", "Server.run(sockets=...)", "leadrelay/cli.py")
    assert "started" in inspect.getsource(Server.startup), moved(
        "uvicorn", "Server.started", "leadrelay/cli.py")
    assert import_from_string("leadrelay.cli:main").__name__ == "main"


def test_uvicorn_server_ticks_through_main_loop_and_on_tick() -> None:
    from uvicorn import Server

    what = "leadrelay/quiet_server.py"
    assert "await self.main_loop()" in inspect.getsource(Server._serve), moved(
        "uvicorn", "Server._serve no longer awaits main_loop()", what)
    assert list(inspect.signature(Server.on_tick).parameters) == ["self", "counter"], moved(
        "uvicorn", "Server.on_tick(counter)", what)
    on_tick = inspect.getsource(Server.on_tick)
    for line in ("if counter % 10 == 0:", "default_headers", "if self.should_exit:"):
        assert line in on_tick, moved("uvicorn", f"Server.on_tick no longer has {line!r}", what)
    assert "self.should_exit = True" in inspect.getsource(Server.handle_exit), moved(
        "uvicorn", "Server.handle_exit no longer sets should_exit", what)


@pytest.mark.parametrize("library", ["fastapi", "starlette", "uvicorn", "sqlalchemy", "aiokafka",
                                     "aiosqlite", "pydantic-settings", "httpx", "httpcore"])
def test_installed_versions_are_within_pyproject_bounds(library: str) -> None:
    """The bounds and the lock agree: what is installed is what pyproject.toml allows."""
    import tomllib
    from importlib.metadata import version
    from pathlib import Path

    from packaging.requirements import Requirement

    pyproject = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())
    requirements = {Requirement(line).name.lower(): Requirement(line)
                    for line in pyproject["project"]["dependencies"]}
    requirement = requirements[library]
    assert requirement.specifier.contains(version(library), prereleases=True), (
        f"{library} {version(library)} is installed but pyproject.toml says "
        f"{requirement.specifier}")
