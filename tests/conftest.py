"""Fixtures every test may use: a real broker process, real databases, migrated per service.

`database_url` runs a test twice, on SQLite and on PostgreSQL (127.0.0.1:5432, a throwaway
database per test, dropped afterwards). PostgreSQL tests are skipped when the server is
unreachable, unless `LEADRELAY_REQUIRE_POSTGRES=1`, which turns that into a failure.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest
from cryptography.fernet import Fernet

from leadrelay.broker import EmbeddedBroker, free_port
from leadrelay.catalog import SERVICES
from leadrelay.harness.postgres import PostgresCluster, PostgresNotFoundError
from shared.encryption import KEYS_VARIABLE
from shared.migrations import upgrade

pytest_plugins = ["tests.kafka_fixtures"]

# A service tested alone has no ingest to fetch lead keys from (the end-to-end tests set it).
os.environ.setdefault("LEADRELAY_LEAD_KEYS_URL", "")

PG_ADMIN_DSN = os.environ.get("LEADRELAY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


def _postgres_reachable() -> bool:
    async def probe() -> bool:
        try:
            connection = await asyncpg.connect(PG_ADMIN_DSN, timeout=3)
        except (OSError, asyncpg.PostgresError, TimeoutError):
            return False
        await connection.close()
        return True

    return asyncio.run(probe())


@pytest.fixture(scope="session", autouse=True)
def encryption_keys() -> Iterator[str]:
    """The services store secrets encrypted and need a key: one for the session, in the
    environment every settings object (and every service process) reads."""
    key = Fernet.generate_key().decode()
    previous = os.environ.get(KEYS_VARIABLE)
    os.environ[KEYS_VARIABLE] = key
    yield key
    if previous is None:
        os.environ.pop(KEYS_VARIABLE, None)
    else:
        os.environ[KEYS_VARIABLE] = previous


@pytest.fixture(scope="session")
def postgres_available() -> bool:
    reachable = _postgres_reachable()
    if not reachable and os.environ.get("LEADRELAY_REQUIRE_POSTGRES") == "1":
        pytest.fail("PostgreSQL is unreachable and LEADRELAY_REQUIRE_POSTGRES=1")
    return reachable


def create_pg_database() -> str:
    name = f"leadrelay_test_{uuid.uuid4().hex[:12]}"

    async def create() -> None:
        connection = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()

    asyncio.run(create())
    return name


def drop_pg_database(name: str) -> None:
    async def drop() -> None:
        connection = await asyncpg.connect(PG_ADMIN_DSN)
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()

    asyncio.run(drop())


def pg_url(name: str) -> str:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{name}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_available: bool
) -> Iterator[str]:
    """An empty database: an SQLite file, or a throwaway PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
        return
    if not postgres_available:
        pytest.skip("PostgreSQL is not reachable")
    name = create_pg_database()
    try:
        yield pg_url(name)
    finally:
        drop_pg_database(name)


@pytest.fixture
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A PostgreSQL cluster of the test's own, to stop and restart at will (`fsync` off: its
    crashes are the server's, not the machine's, so what was committed survives them)."""
    try:
        cluster = PostgresCluster(settings={"fsync": "off"})
    except PostgresNotFoundError as error:
        if os.environ.get("LEADRELAY_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{error} and LEADRELAY_REQUIRE_POSTGRES=1")
        pytest.skip(str(error))
    with cluster:
        yield cluster


def migrate(service: str, url: str) -> None:
    spec = SERVICES[service]
    upgrade(spec.migrations_dir, url, spec.version_table)


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """A real tansu broker process on a free port, shared by the whole run."""
    with EmbeddedBroker(free_port()) as running:
        yield running


@pytest.fixture
def topic_prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def no_tasks_left() -> AsyncIterator[None]:
    yield
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]
    assert not pending, f"tasks left running: {pending}"
