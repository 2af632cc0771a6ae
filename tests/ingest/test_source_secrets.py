"""Secrets of sources registered through the API: stored encrypted, never returned, still
checked on every webhook; the migration of plaintext rows and `leadrelay reencrypt`."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import insert

from leadrelay.catalog import SERVICES
from leadrelay.cli import main
from services.ingest.app import create_app
from services.ingest.models import source
from services.ingest.settings import IngestSettings
from shared.clock import SystemClock
from shared.db import Database
from shared.encryption import (
    KEYS_VARIABLE,
    EncryptionKeyError,
    SecretBox,
    UndecryptableSecretError,
)
from shared.migrations import upgrade
from tests.ingest.conftest import table_rows
from tests.support import ADMIN_HEADERS, running_app

pytestmark = pytest.mark.broker

BEARER = "crm-bearer-token-that-must-not-leak"


async def test_a_registered_source_keeps_its_secret_encrypted_and_unshown(
    settings: IngestSettings,
) -> None:
    async with running_app(create_app(settings), headers=ADMIN_HEADERS) as client:
        saved = await client.put("/v1/sources/crm", json={"kind": "zapier",
                                                         "secrets": [BEARER]})
        listed = await client.get("/v1/sources")
        signed = await client.post("/v1/webhooks/crm", json={"email": "ann@crm.example"},
                                   headers={"Authorization": f"Bearer {BEARER}"})
        wrong = await client.post("/v1/webhooks/crm", json={"email": "ann@crm.example"},
                                  headers={"Authorization": "Bearer another-token-12345"})
    assert saved.status_code == 201, saved.text
    assert BEARER not in saved.text and BEARER not in listed.text
    [crm] = [item for item in listed.json() if item["key"] == "crm"]
    assert crm["secret_count"] == 1
    assert signed.status_code == 202, signed.text
    assert wrong.status_code == 401
    [row] = await table_rows(settings, source)
    assert BEARER not in json.dumps(row["config"])
    assert SecretBox.from_setting(settings.encryption_keys).decrypt(
        row["config"]["secrets"][0]) == BEARER


def stored_config(url: str) -> dict[str, Any]:
    async def read() -> dict[str, Any]:
        db = Database(url)
        try:
            async with db.reading() as session:
                config: dict[str, Any] = (await session.execute(
                    source.select())).mappings().one()["config"]
        finally:
            await db.dispose()
        return config

    return asyncio.run(read())


def test_the_migration_encrypts_plaintext_and_reencrypt_moves_to_the_newest_key(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    spec = SERVICES["ingest"]
    upgrade(spec.migrations_dir, database_url, spec.version_table, revision="0004")

    async def store_plaintext() -> None:
        db = Database(database_url)
        now = SystemClock().now()
        try:
            async with db.transaction() as session:
                await session.execute(insert(source).values(
                    key="crm", kind="zapier", config={"kind": "zapier", "secrets": [BEARER]},
                    created_at=now, updated_at=now))
        finally:
            await db.dispose()

    asyncio.run(store_plaintext())
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    monkeypatch.setenv(KEYS_VARIABLE, old)
    upgrade(spec.migrations_dir, database_url, spec.version_table)
    migrated = stored_config(database_url)["secrets"][0]
    assert migrated != BEARER and SecretBox([old]).decrypt(migrated) == BEARER

    monkeypatch.setenv(KEYS_VARIABLE, f"{new},{old}")
    monkeypatch.setenv("LEADRELAY_INGEST_DATABASE_URL", database_url)
    assert main(["reencrypt", "ingest"]) == 0
    assert "ingest: 1 row(s)" in capsys.readouterr().out
    rotated = stored_config(database_url)["secrets"][0]
    assert SecretBox([new]).decrypt(rotated) == BEARER
    with pytest.raises(UndecryptableSecretError):
        SecretBox([old]).decrypt(rotated)


def test_without_a_key_ingest_does_not_start(settings: IngestSettings) -> None:
    with pytest.raises(EncryptionKeyError, match="LEADRELAY_ENCRYPTION_KEYS is not set"):
        create_app(settings.model_copy(update={"encryption_keys": ""}))
