"""When ingest received each lead, on the lead and its assignments (received -> scored hop)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 22:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ('router_lead', 'router_assignment'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.add_column(
                sa.Column('received_at', shared.db.UTCDateTime(timezone=True), nullable=True)
            )


def downgrade() -> None:
    for table in ('router_assignment', 'router_lead'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_column('received_at')
