"""Fixtures of ingest's tests: settings against a real database and broker, declared sources."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import Table, select

from leadrelay.broker import EmbeddedBroker
from services.ingest.settings import IngestSettings
from shared.db import Database
from tests.conftest import migrate
from tests.support import ADMIN_TOKEN

VENDORS = Path("/work/shared/vendors")
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD_SECRET = "old-secret-being-rotated-out"
TOKEN = "zapier-token-0123456789"

SOURCES: list[dict[str, Any]] = [
    {"key": "hubspot", "kind": "hubspot", "secrets": [SECRET, OLD_SECRET]},
    {"key": "typeform", "kind": "typeform", "secrets": [SECRET],
     "field_mapping": {"readable_ref_short_text": "first_name"},
     "defaults": {"channel": "typeform", "campaign": "city-survey"}},
    {"key": "webflow", "kind": "webflow", "secrets": [SECRET, OLD_SECRET]},
    {"key": "zapier", "kind": "zapier", "secrets": [TOKEN],
     "field_mapping": {"age": "employee_count"}},
    {"key": "standard", "kind": "standard_webhooks", "secrets": [OLD_SECRET, SECRET],
     "field_mapping": {"fullName": "name", "phoneNumber": "phone", "occupation": "job_title"}},
    {"key": "contact-form", "kind": "form", "thank_you_url": "https://www.example.com/thanks",
     "allowed_origins": ["https://www.example.com"], "honeypot_field": "website",
     "defaults": {"channel": "website"}},
]


def fixture_bytes(path: str) -> bytes:
    return (VENDORS / path).read_bytes()


@pytest.fixture
def sources_file(tmp_path: Path) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump({"sources": SOURCES}))
    return path


@pytest.fixture
def settings(
    database_url: str, broker: EmbeddedBroker, topic_prefix: str, sources_file: Path
) -> IngestSettings:
    migrate("ingest", database_url)
    return IngestSettings(
        database_url=database_url,
        kafka_bootstrap_servers=broker.bootstrap_servers,
        kafka_topic_prefix=topic_prefix,
        sources_file=sources_file,
        admin_token=ADMIN_TOKEN,
    )


async def table_rows(settings: IngestSettings, table: Table) -> list[dict[str, Any]]:
    """Every row of one of ingest's tables, read straight from the database."""
    db = Database(settings.database_url)
    try:
        async with db.reading() as session:
            result = await session.execute(select(table))
            return [dict(row) for row in result.mappings().all()]
    finally:
        await db.dispose()

