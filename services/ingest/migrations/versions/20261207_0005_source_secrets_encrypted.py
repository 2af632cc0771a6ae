"""Secrets at rest: the secrets of sources registered through the API are encrypted

Needs `LEADRELAY_ENCRYPTION_KEYS` when sources are stored (the newest key encrypts).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07 05:00:00
"""

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import op

import shared.db
from shared.encryption import SecretBox

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SOURCE = sa.table('ingest_source', sa.column('key', sa.String),
                  sa.column('config', shared.db.JSONType))


def _convert(change_of: Callable[[SecretBox], Callable[[str], str]]) -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.select(SOURCE)).mappings().all()
    if not any(row['config'].get('secrets') for row in rows):
        return
    change = change_of(SecretBox.from_environment())
    for row in rows:
        config = dict(row['config'])
        config['secrets'] = [change(secret) for secret in config.get('secrets', [])]
        bind.execute(sa.update(SOURCE).where(SOURCE.c.key == row['key']).values(config=config))


def upgrade() -> None:
    _convert(lambda box: box.encrypt)


def downgrade() -> None:
    _convert(lambda box: box.decrypt)
