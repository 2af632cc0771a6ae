"""Each lead's signal tally, kept with its score so that a new signal adds to it

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 11:05:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('scorer_lead_score', schema=None) as batch_op:
        batch_op.add_column(sa.Column('signal_tally', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('scorer_lead_score', schema=None) as batch_op:
        batch_op.drop_column('signal_tally')
