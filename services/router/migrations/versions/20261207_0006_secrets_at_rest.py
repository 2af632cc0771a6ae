"""Secrets at rest: rep webhook secrets and Slack URLs encrypted; notifications no longer copy
the secret or the Slack URL (they refer to the person's channel)

Needs `LEADRELAY_ENCRYPTION_KEYS` when the roster holds secrets (the newest key encrypts).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07 05:00:00
"""

import hashlib
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from shared.encryption import SecretBox

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SDR = sa.table('router_sdr', sa.column('id', sa.String), sa.column('webhook_secret', sa.Text),
               sa.column('slack_webhook_url', sa.Text))
NOTIFICATION = sa.table('router_notification', sa.column('id', sa.Integer),
                        sa.column('channel', sa.String), sa.column('url', sa.String))


def _convert(convert_secret: bool) -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.select(SDR).where(
        sa.or_(SDR.c.webhook_secret.is_not(None), SDR.c.slack_webhook_url.is_not(None))
    )).mappings().all()
    if not rows:
        return
    box = SecretBox.from_environment()
    change = box.encrypt if convert_secret else box.decrypt
    for row in rows:
        bind.execute(sa.update(SDR).where(SDR.c.id == row['id']).values(
            webhook_secret=None if row['webhook_secret'] is None else change(row['webhook_secret']),
            slack_webhook_url=(None if row['slack_webhook_url'] is None
                               else change(row['slack_webhook_url'])),
        ))


def _widen(wide: bool) -> None:
    """Encrypted values are longer than the plaintext; SQLite has no lengths to change (and
    recreating `router_sdr` there would trip its foreign keys)."""
    if op.get_bind().dialect.name == 'sqlite':
        return
    short = {'slack_webhook_url': sa.String(length=2048), 'webhook_secret': sa.String(length=200)}
    for name, narrow in short.items():
        op.alter_column('router_sdr', name, type_=sa.Text() if wide else narrow,
                        existing_type=narrow if wide else sa.Text())


def upgrade() -> None:
    _widen(wide=True)
    _convert(convert_secret=True)
    bind = op.get_bind()
    for row in bind.execute(sa.select(NOTIFICATION.c.id, NOTIFICATION.c.url)
                            .where(NOTIFICATION.c.channel == 'slack')).mappings():
        reference = 'slack:' + hashlib.sha256(row['url'].encode()).hexdigest()[:32]
        bind.execute(sa.update(NOTIFICATION).where(NOTIFICATION.c.id == row['id'])
                     .values(url=reference))
    # In place (SQLite 3.35+ too): a batch copy of the table would cascade to the attempts.
    op.execute('ALTER TABLE router_notification DROP COLUMN secret')


def downgrade() -> None:
    op.execute('ALTER TABLE router_notification ADD COLUMN secret VARCHAR(200)')
    _convert(convert_secret=False)
    _widen(wide=False)
