"""scorer's tables. All are prefixed `scorer_`: the service owns them and no other reads them."""

from __future__ import annotations

from sqlalchemy import Column, Float, String, Table

from shared.db import JSONType, UTCDateTime, service_metadata
from shared.inbox import inbox_tables
from shared.outbox import outbox_tables

metadata = service_metadata()

lead_score = Table(
    "scorer_lead_score",
    metadata,
    Column("lead_id", String(36), primary_key=True),
    Column("profile", JSONType, nullable=False),
    Column("score", Float, nullable=False),
    Column("fit", Float, nullable=False),
    Column("engagement", Float, nullable=False),
    Column("temperature", String(8), nullable=False),
    Column("model_version", String(64), nullable=False),
    Column("breakdown", JSONType, nullable=False),
    Column("scored_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)
"""One row per lead: its latest profile and score. `scored_at` moves only when the score,
temperature or breakdown changes (when a `lead.scored` is published); `updated_at` moves with
every event applied."""

OUTBOX = outbox_tables(metadata, "scorer")
INBOX = inbox_tables(metadata, "scorer")
