"""Alembic environment for scorer's tables."""

from services.scorer.models import metadata
from shared.migrations import run_alembic_env

run_alembic_env(metadata)
