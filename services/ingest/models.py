"""ingest's tables. All are prefixed `ingest_`: the service owns them and no other reads them."""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from shared.audit import audit_table
from shared.db import JSONType, UTCDateTime, service_metadata
from shared.inbox import inbox_tables
from shared.outbox import AutoIncrement, outbox_tables

metadata = service_metadata()

lead = Table(
    "ingest_lead",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", String(200)),
    Column("company", String(200)),
    Column("phone", String(32)),
    Column("country", String(2)),
    Column("source", String(100)),
    Column("job_title", String(200)),
    Column("employee_count", Integer),
    Column("industry", String(200)),
    Column("annual_revenue", Float),
    Column("website", String(255)),
    Column("language", String(8)),
    Column("demo_requested", Boolean, nullable=False, default=False),
    Column("account_key", String(255), index=True),
    Column("consent", JSONType),
    Column("attribution", JSONType),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("data_key", String(64)),
)
"""`data_key` seals the lead's personal data in its events (`shared.sealing`); the erasure
deletes the row, and with it the only key that opens any copy of those events."""

submission = Table(
    "ingest_submission",
    metadata,
    Column("id", AutoIncrement, primary_key=True, autoincrement=True),
    Column("lead_id", String(36), ForeignKey("ingest_lead.id", ondelete="CASCADE"), index=True),
    Column("channel", String(32), nullable=False),
    Column("source_key", String(100)),
    Column("external_id", String(255)),
    Column("payload", JSONType, nullable=False),
    Column("raw", Text),
    Column("received_at", UTCDateTime, nullable=False, index=True),
    Column("note", Text),
    Column("delivery_id", String(36), index=True),
    Column("delivery_part", Integer),
    UniqueConstraint("source_key", "external_id"),
)
"""Each submission as received (`raw`) and as normalised (`payload`); purged after the retention.

`(source_key, external_id)` is unique: a vendor delivering the same event twice is a replay.
The entries of one webhook delivery share its `raw` body and a `delivery_id`; `delivery_part`
is the entry's place in the body's array, so erasing one person redacts their part of the
body the others keep."""

source = Table(
    "ingest_source",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("kind", String(32), nullable=False),
    Column("config", JSONType, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)
"""Sources registered through the API (those of the sources file are not stored)."""

idempotency_key = Table(
    "ingest_idempotency_key",
    metadata,
    Column("scope", String(150), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("response", JSONType, nullable=False),
    Column("created_at", UTCDateTime, nullable=False, index=True),
)
"""The first answer to each `Idempotency-Key`, committed with the work it describes."""

crm_fetch = Table(
    "ingest_crm_fetch",
    metadata,
    Column("id", AutoIncrement, primary_key=True, autoincrement=True),
    Column("source_key", String(100), nullable=False),
    Column("object_id", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("due_at", UTCDateTime, nullable=False),
    Column("claimed_until", UTCDateTime),
    Column("last_error", String(500)),
    Column("lead_id", String(36), index=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("finished_at", UTCDateTime, index=True),
    Index("ix_ingest_crm_fetch_status_due", "status", "due_at"),
    Index("ix_ingest_crm_fetch_contact", "source_key", "object_id"),
)
"""A HubSpot contact to fetch from the CRM because a thin webhook event named it
(`services.ingest.crm_fetches`): `pending` until it is `done` (the lead it made, if the
contact had a usable email) or `failed` (`last_error` says why). `claimed_until` is the lease
of the instance fetching it; `due_at` the next try, after a `429`'s `Retry-After` or a back-off.
Finished rows are purged with the submissions; erasing a lead deletes its rows."""

AUDIT = audit_table(metadata, "ingest")
OUTBOX = outbox_tables(metadata, "ingest", lanes=True)
INBOX = inbox_tables(metadata, "ingest")
