"""The CRM fetches of HubSpot's thin webhook events, retried from the database

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import shared.db

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'ingest_crm_fetch',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True,
                  nullable=False),
        sa.Column('source_key', sa.String(length=100), nullable=False),
        sa.Column('object_id', sa.String(length=64), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('due_at', shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('claimed_until', shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('last_error', sa.String(length=500), nullable=True),
        sa.Column('lead_id', sa.String(length=36), nullable=True),
        sa.Column('created_at', shared.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column('finished_at', shared.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_ingest_crm_fetch')),
    )
    op.create_index('ix_ingest_crm_fetch_status_due', 'ingest_crm_fetch', ['status', 'due_at'])
    op.create_index('ix_ingest_crm_fetch_contact', 'ingest_crm_fetch',
                    ['source_key', 'object_id'])
    op.create_index('ix_ingest_crm_fetch_lead_id', 'ingest_crm_fetch', ['lead_id'])
    op.create_index('ix_ingest_crm_fetch_finished_at', 'ingest_crm_fetch', ['finished_at'])


def downgrade() -> None:
    op.drop_index('ix_ingest_crm_fetch_finished_at', table_name='ingest_crm_fetch')
    op.drop_index('ix_ingest_crm_fetch_lead_id', table_name='ingest_crm_fetch')
    op.drop_index('ix_ingest_crm_fetch_contact', table_name='ingest_crm_fetch')
    op.drop_index('ix_ingest_crm_fetch_status_due', table_name='ingest_crm_fetch')
    op.drop_table('ingest_crm_fetch')
