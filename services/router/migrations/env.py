"""Alembic environment for router's tables."""

from services.router.models import metadata
from shared.migrations import run_alembic_env

run_alembic_env(metadata)
