"""lead data keys; the delivery of each submission

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.sealing import new_data_key

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('ingest_lead', schema=None) as batch_op:
        batch_op.add_column(sa.Column('data_key', sa.String(length=64), nullable=True))
    with op.batch_alter_table('ingest_submission', schema=None) as batch_op:
        batch_op.add_column(sa.Column('delivery_id', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('delivery_part', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_ingest_submission_delivery_id'), ['delivery_id'],
                              unique=False)
    # Every lead gets its own key; its events from now on are sealed with it.
    connection = op.get_bind()
    lead = sa.table('ingest_lead', sa.column('id', sa.String), sa.column('data_key', sa.String))
    for (lead_id,) in connection.execute(sa.select(lead.c.id)).all():
        connection.execute(
            sa.update(lead).where(lead.c.id == lead_id).values(data_key=new_data_key()))


def downgrade() -> None:
    with op.batch_alter_table('ingest_submission', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ingest_submission_delivery_id'))
        batch_op.drop_column('delivery_part')
        batch_op.drop_column('delivery_id')
    with op.batch_alter_table('ingest_lead', schema=None) as batch_op:
        batch_op.drop_column('data_key')
