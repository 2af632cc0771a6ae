"""Alembic, run per service: each service keeps its revisions and its own version table.

A service's `migrations/env.py` calls `run_alembic_env(metadata, version_table)`. Commands call
`upgrade(package_dir, url, version_table)`; it is synchronous (Alembic drives its own event loop
for the async engine), so async callers run it in a thread.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

from shared.db import create_engine


def alembic_config(migrations_dir: Path, url: str, version_table: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    config.set_main_option("version_table", version_table)
    config.set_main_option(
        "file_template", "%%(year)d%%(month).2d%%(day).2d_%%(rev)s_%%(slug)s"
    )
    return config


def upgrade(migrations_dir: Path, url: str, version_table: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(migrations_dir, url, version_table), revision)


def run_alembic_env(metadata: MetaData) -> None:
    """The body of every service's `env.py`: migrate online with the project's async engine."""
    config = context.config
    url = config.get_main_option("sqlalchemy.url") or ""
    version_table = config.get_main_option("version_table") or "alembic_version"

    def migrate(connection: Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            version_table=version_table,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()

    async def run() -> None:
        engine = create_engine(url)
        try:
            async with engine.connect() as connection:
                await connection.run_sync(migrate)
                await connection.commit()
        finally:
            await engine.dispose()

    asyncio.run(run())
