"""Pending outbox rows indexed by topic, so the relay finds the fast lane's rows at once

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 09:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pending = sa.text('published_at IS NULL')
    op.create_index('ix_ingest_outbox_event_pending_topic', 'ingest_outbox_event',
                    ['topic', 'id'], postgresql_where=pending, sqlite_where=pending)


def downgrade() -> None:
    op.drop_index('ix_ingest_outbox_event_pending_topic', table_name='ingest_outbox_event')
