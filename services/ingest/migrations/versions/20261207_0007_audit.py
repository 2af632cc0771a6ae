"""The audit log: who changed the sources, when, and what changed

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 05:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import shared.db

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'ingest_audit',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True,
                  nullable=False),
        sa.Column('at', shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('actor', sa.String(length=200), nullable=False),
        sa.Column('action', sa.String(length=100), nullable=False),
        sa.Column('subject', sa.String(length=300), nullable=False),
        sa.Column('changes', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()),
                                                    'postgresql'), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_ingest_audit')),
    )
    op.create_index('ix_ingest_audit_subject', 'ingest_audit', ['subject'])


def downgrade() -> None:
    op.drop_index('ix_ingest_audit_subject', table_name='ingest_audit')
    op.drop_table('ingest_audit')
