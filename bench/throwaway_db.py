"""Throwaway PostgreSQL databases for the benchmarks (127.0.0.1:5432, trust auth)."""

from __future__ import annotations

import uuid

import asyncpg

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def pg_url(name: str) -> str:
    """The SQLAlchemy URL of database `name` on the same server."""
    return f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"


async def create_database() -> str:
    """Create an empty database with a fresh name; returns the name."""
    name = f"leadrelay_bench_{uuid.uuid4().hex[:8]}"
    connection = await asyncpg.connect(PG_ADMIN)
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return name


async def drop_database(name: str) -> None:
    connection = await asyncpg.connect(PG_ADMIN)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()
