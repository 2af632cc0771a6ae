"""When ingest received each lead, for the received -> scored hop of speed to lead

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 22:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('scorer_lead_score', schema=None) as batch_op:
        batch_op.add_column(
            sa.Column('received_at', shared.db.UTCDateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table('scorer_lead_score', schema=None) as batch_op:
        batch_op.drop_column('received_at')
