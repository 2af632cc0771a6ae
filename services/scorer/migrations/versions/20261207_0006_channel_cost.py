"""What a lead of each channel costs, for the funnel report

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 08:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'scorer_channel_cost',
        sa.Column('channel', sa.String(length=100), nullable=False),
        sa.Column('cost_per_lead_cents', sa.BigInteger(), nullable=False),
        sa.Column('currency', sa.String(length=3), nullable=False),
        sa.Column('updated_at', shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('channel', name=op.f('pk_scorer_channel_cost')),
    )


def downgrade() -> None:
    op.drop_table('scorer_channel_cost')
