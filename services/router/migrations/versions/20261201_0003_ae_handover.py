"""Hand-overs of qualified leads waiting for an eligible AE

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 21:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import shared.db

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')


def upgrade() -> None:
    op.create_table(
        'router_handover',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('lead_id', sa.String(length=36), nullable=False),
        sa.Column('from_assignment_id', sa.String(length=36), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('requested_at', shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('last_attempt_at', shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('next_attempt_at', shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('manager_notified_at', shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('attempt_log', JSON, nullable=False),
        sa.Column('assignment_id', sa.String(length=36), nullable=True),
        sa.Column('handed_at', shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['lead_id'], ['router_lead.id'],
                                name=op.f('fk_router_handover_lead_id_router_lead')),
        sa.ForeignKeyConstraint(
            ['from_assignment_id'], ['router_assignment.id'],
            name=op.f('fk_router_handover_from_assignment_id_router_assignment')),
        sa.ForeignKeyConstraint(
            ['assignment_id'], ['router_assignment.id'],
            name=op.f('fk_router_handover_assignment_id_router_assignment')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_router_handover')),
    )
    op.create_index(op.f('ix_router_handover_lead_id'), 'router_handover', ['lead_id'])
    op.create_index(
        'ix_router_handover_due', 'router_handover', ['next_attempt_at'],
        postgresql_where=sa.text("status = 'waiting'"),
        sqlite_where=sa.text("status = 'waiting'"),
    )


def downgrade() -> None:
    op.drop_index('ix_router_handover_due', table_name='router_handover')
    op.drop_index(op.f('ix_router_handover_lead_id'), table_name='router_handover')
    op.drop_table('router_handover')
