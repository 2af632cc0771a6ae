"""Console sessions of the admin: a session with no person (signed in with the admin token)

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 09:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('router_console_session') as table:
        table.alter_column('person_id', existing_type=sa.String(length=36), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM router_console_session WHERE person_id IS NULL")
    with op.batch_alter_table('router_console_session') as table:
        table.alter_column('person_id', existing_type=sa.String(length=36), nullable=False)
