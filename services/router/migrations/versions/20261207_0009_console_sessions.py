"""The web console: one-time sign-in links and signed-in sessions (SHA-256 of each secret)

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'router_sign_in_link',
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('person_id', sa.String(length=36), nullable=False),
        sa.Column('created_at', shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('expires_at', shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('used_at', shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['person_id'], ['router_sdr.id'],
                                name=op.f('fk_router_sign_in_link_person_id_router_sdr')),
        sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_router_sign_in_link')),
    )
    op.create_table(
        'router_console_session',
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('person_id', sa.String(length=36), nullable=False),
        sa.Column('csrf_token', sa.String(length=64), nullable=False),
        sa.Column('created_at', shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('expires_at', shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['person_id'], ['router_sdr.id'],
                                name=op.f('fk_router_console_session_person_id_router_sdr')),
        sa.PrimaryKeyConstraint('token_hash', name=op.f('pk_router_console_session')),
    )
    op.create_index('ix_router_console_session_person_id', 'router_console_session',
                    ['person_id'])


def downgrade() -> None:
    op.drop_index('ix_router_console_session_person_id', table_name='router_console_session')
    op.drop_table('router_console_session')
    op.drop_table('router_sign_in_link')
