"""Alembic environment for ingest's tables."""

from services.ingest.models import metadata
from shared.migrations import run_alembic_env

run_alembic_env(metadata)
