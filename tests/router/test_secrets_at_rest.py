"""The roster's secrets at rest: webhook secrets and Slack URLs are stored encrypted, never
shown, never copied into notification rows; rotation and the migration of plaintext rows."""

from __future__ import annotations

import asyncio

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select, text

from leadrelay.catalog import SERVICES
from services.router import roster
from services.router.app import create_app
from services.router.channels import reencrypt_channels, slack_reference
from services.router.models import notification, sdr
from services.router.schemas import PersonCreate
from services.router.settings import RouterSettings
from shared.db import Database
from shared.encryption import (
    KEYS_VARIABLE,
    EncryptionKeyError,
    SecretBox,
    UndecryptableSecretError,
)
from shared.migrations import upgrade
from tests.router.conftest import Router, scored
from tests.router.receiver import WebhookReceiver
from tests.router.test_notifications import deliver, notifier_for

SECRET = "whsec_c2VjcmV0LXRoYXQtbXVzdC1ub3QtbGVhaw=="
SLACK = "http://127.0.0.1:9/services/T000/B000/slack-secret-path"


async def add_ada(router: Router) -> str:
    async with router.db.transaction() as session:
        joined = await roster.create_person(session, router.clock, PersonCreate(
            name="Ada", email="ada@seller.example", webhook_url="http://127.0.0.1:9/ada",
            webhook_secret=SECRET, slack_webhook_url=SLACK,
        ), router.context.channels)
        view = await roster.person_view(session, joined.row)
    assert view.webhook_secret_set and view.slack_webhook_set
    assert "slack-secret-path" not in view.model_dump_json()
    assert SECRET not in view.model_dump_json()
    person_id: str = joined.row["id"]
    return person_id


async def test_the_columns_hold_no_plaintext_and_notifications_no_secret(router: Router) -> None:
    await add_ada(router)
    await router.consume(scored("lead-1", clock=router.clock))
    [person] = await router.rows(sdr)
    assert SECRET not in person["webhook_secret"] and "slack" not in person["slack_webhook_url"]
    assert router.context.secrets.decrypt(person["webhook_secret"]) == SECRET
    assert router.context.secrets.decrypt(person["slack_webhook_url"]) == SLACK
    deliveries = await router.rows(notification)
    assert sorted(row["channel"] for row in deliveries) == ["generic", "slack"]
    assert "secret" not in deliveries[0]
    stored = repr(deliveries)
    assert SECRET not in stored and "slack-secret-path" not in stored
    assert {row["url"] for row in deliveries} == {"http://127.0.0.1:9/ada",
                                                  slack_reference(SLACK)}


async def test_reencrypting_moves_every_secret_to_the_newest_key(router: Router) -> None:
    await add_ada(router)
    [before] = await router.rows(sdr)
    newest = Fernet.generate_key().decode()
    rotated = SecretBox.from_setting(f"{newest},{router.settings.encryption_keys}")
    assert rotated.decrypt(before["webhook_secret"]) == SECRET  # old values stay readable
    assert await reencrypt_channels(router.db, rotated) == 1
    [after] = await router.rows(sdr)
    only_newest = SecretBox([newest])
    assert only_newest.decrypt(after["webhook_secret"]) == SECRET
    assert only_newest.decrypt(after["slack_webhook_url"]) == SLACK
    with pytest.raises(UndecryptableSecretError):
        router.context.secrets.decrypt(after["webhook_secret"])


def test_the_migration_encrypts_what_was_stored_in_plaintext(
    database_url: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    spec = SERVICES["router"]
    upgrade(spec.migrations_dir, database_url, spec.version_table, revision="0005")
    key = Fernet.generate_key().decode()
    monkeypatch.setenv(KEYS_VARIABLE, key)

    async def store_plaintext() -> None:
        db = Database(database_url)
        try:
            async with db.transaction() as session:
                await session.execute(text(
                    "INSERT INTO router_sdr (id, name, email, active, created_at, "
                    "webhook_secret, slack_webhook_url) VALUES ('p1', 'Ada', 'ada@x.example', "
                    "true, CURRENT_TIMESTAMP, :secret, :slack)"),
                    {"secret": SECRET, "slack": SLACK})
                await session.execute(text(
                    "INSERT INTO router_notification (sdr_id, url, channel, kind, secret, "
                    "payload, status, attempts, created_at) VALUES ('p1', :slack, 'slack', "
                    "'offer', :secret, '{}', 'pending', 0, CURRENT_TIMESTAMP)"),
                    {"secret": SECRET, "slack": SLACK})
        finally:
            await db.dispose()

    async def read() -> tuple[dict[str, object], dict[str, object]]:
        db = Database(database_url)
        try:
            async with db.reading() as session:
                person = (await session.execute(select(sdr))).mappings().one()
                queued = (await session.execute(select(notification))).mappings().one()
        finally:
            await db.dispose()
        return dict(person), dict(queued)

    asyncio.run(store_plaintext())
    upgrade(spec.migrations_dir, database_url, spec.version_table)
    person, queued = asyncio.run(read())
    box = SecretBox([key])
    assert person["webhook_secret"] != SECRET and person["slack_webhook_url"] != SLACK
    assert box.decrypt(str(person["webhook_secret"])) == SECRET
    assert box.decrypt(str(person["slack_webhook_url"])) == SLACK
    assert "secret" not in queued
    assert queued["url"] == slack_reference(SLACK)


async def test_a_slack_message_goes_to_the_decrypted_url(router: Router) -> None:
    """The Slack row holds a reference; the loop reads the person's URL when it sends."""
    async with WebhookReceiver() as receiver:
        await router.add_person("Ada", slack_webhook_url=receiver.url("/slack/secret-path"))
        await router.consume(scored("lead-1", clock=router.clock))
        [delivery] = await deliver(router, notifier_for(router))
    assert delivery.outcome == "delivered"
    assert [request.path for request in receiver.received] == ["/slack/secret-path"]
    [row] = await router.rows(notification)
    assert row["url"].startswith("slack:") and "secret-path" not in row["url"]


def test_without_a_key_the_router_does_not_start(router_url: str) -> None:
    with pytest.raises(EncryptionKeyError, match="LEADRELAY_ENCRYPTION_KEYS is not set"):
        create_app(RouterSettings(database_url=router_url, encryption_keys=""))
