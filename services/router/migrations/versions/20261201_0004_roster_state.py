"""Roster state: one row whose counters tell router instances when their roster cache is stale

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01 21:45:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    state = op.create_table(
        'router_roster_state',
        sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
        sa.Column('generation', sa.BigInteger(), server_default='0', nullable=False),
        sa.Column('routing_seq', sa.BigInteger(), server_default='0', nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_router_roster_state')),
    )
    op.bulk_insert(state, [{'id': 1, 'generation': 0, 'routing_seq': 0}])


def downgrade() -> None:
    op.drop_table('router_roster_state')
