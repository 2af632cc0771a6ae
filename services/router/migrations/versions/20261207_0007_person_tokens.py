"""People's API tokens in a table of their own: several per person, listed, revoked

`router_sdr.token_hash` is left empty and unread (see `upgrade`).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'router_person_token',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('person_id', sa.String(length=36), nullable=False),
        sa.Column('token_hash', sa.String(length=64), nullable=False),
        sa.Column('label', sa.String(length=200), nullable=False),
        sa.Column('created_at', shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('revoked_at', shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['person_id'], ['router_sdr.id'],
                                name=op.f('fk_router_person_token_person_id_router_sdr')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_router_person_token')),
        sa.UniqueConstraint('token_hash', name=op.f('uq_router_person_token_token_hash')),
    )
    op.create_index('ix_router_person_token_person_id', 'router_person_token', ['person_id'])
    # The token each person got on joining the roster keeps working, as the first of theirs.
    op.execute(
        "INSERT INTO router_person_token (id, person_id, token_hash, label, created_at) "
        "SELECT id, id, token_hash, 'joined', created_at FROM router_sdr "
        "WHERE token_hash IS NOT NULL"
    )
    # The old column is emptied, not dropped: SQLite can drop neither a UNIQUE column nor,
    # with people referenced by teams and tokens, rebuild router_sdr without it.
    op.execute("UPDATE router_sdr SET token_hash = NULL")


def downgrade() -> None:
    op.execute(
        "UPDATE router_sdr SET token_hash = (SELECT token_hash FROM router_person_token "
        "WHERE person_id = router_sdr.id AND revoked_at IS NULL "
        "ORDER BY created_at LIMIT 1)"
    )
    op.drop_index('ix_router_person_token_person_id', table_name='router_person_token')
    op.drop_table('router_person_token')
