"""Trace context and correlation id kept with each outbox event

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('ingest_outbox_event') as table:
        table.add_column(sa.Column('traceparent', sa.String(length=55), nullable=True))
        table.add_column(sa.Column('correlation_id', sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('ingest_outbox_event') as table:
        table.drop_column('correlation_id')
        table.drop_column('traceparent')
