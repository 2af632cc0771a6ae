"""router's tables. All are prefixed `router_`: the service owns them and no other reads them."""

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
)

from shared.db import JSONType, UTCDateTime, service_metadata
from shared.inbox import inbox_tables
from shared.outbox import AutoIncrement, outbox_tables

metadata = service_metadata()

ACTIVE_STATUSES = ("offered", "accepted")
"""Assignment statuses that hold a lead: a lead has at most one assignment in them."""

sdr = Table(
    "router_sdr",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("email", String(320), nullable=False, unique=True),
    Column("webhook_url", String(2048), nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    Column("last_assigned_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
)

lead = Table(
    "router_lead",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("profile", JSONType, nullable=False),
    Column("score", Float, nullable=False),
    Column("temperature", String(8), nullable=False),
    # cold: not routed; waiting: hot or warm, no SDR was active; routed: offered to an SDR;
    # stranded: its offer lapsed and no other SDR was active.
    Column("status", String(16), nullable=False),
    Column("scored_at", UTCDateTime, nullable=False),
    Column("waiting_since", UTCDateTime, nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
)
Index(
    "ix_router_lead_waiting",
    lead.c.waiting_since,
    postgresql_where=lead.c.status == "waiting",
    sqlite_where=lead.c.status == "waiting",
)

assignment = Table(
    "router_assignment",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("lead_id", String(36), ForeignKey("router_lead.id"), nullable=False),
    Column("sdr_id", String(36), ForeignKey("router_sdr.id"), nullable=False),
    Column("status", String(16), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("offered_at", UTCDateTime, nullable=False),
    Column("deadline_at", UTCDateTime, nullable=False),
    Column("accepted_at", UTCDateTime, nullable=True),
    Column("closed_at", UTCDateTime, nullable=True),
    Column("lead_snapshot", JSONType, nullable=False),
)
Index("ix_router_assignment_lead_id", assignment.c.lead_id, assignment.c.offered_at)
Index(
    "uq_router_assignment_active_lead",
    assignment.c.lead_id,
    unique=True,
    postgresql_where=assignment.c.status.in_(ACTIVE_STATUSES),
    sqlite_where=assignment.c.status.in_(ACTIVE_STATUSES),
)
Index(
    "ix_router_assignment_due",
    assignment.c.deadline_at,
    postgresql_where=assignment.c.status == "offered",
    sqlite_where=assignment.c.status == "offered",
)

escalation = Table(
    "router_escalation",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("lead_id", String(36), ForeignKey("router_lead.id"), nullable=False, index=True),
    Column("from_assignment_id", String(36), ForeignKey("router_assignment.id"), nullable=False),
    Column("to_assignment_id", String(36), ForeignKey("router_assignment.id"), nullable=True),
    Column("from_sdr_id", String(36), ForeignKey("router_sdr.id"), nullable=False),
    Column("to_sdr_id", String(36), ForeignKey("router_sdr.id"), nullable=True),
    Column("reason", String(32), nullable=False),
    Column("escalated_at", UTCDateTime, nullable=False),
)

notification = Table(
    "router_notification",
    metadata,
    Column("id", AutoIncrement, primary_key=True, autoincrement=True),
    Column(
        "assignment_id", String(36), ForeignKey("router_assignment.id"), nullable=False, index=True
    ),
    Column("sdr_id", String(36), ForeignKey("router_sdr.id"), nullable=False),
    Column("url", String(2048), nullable=False),
    Column("payload", JSONType, nullable=False),
    # pending -> delivered | failed (gave up) | cancelled (the offer closed first)
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime, nullable=True),
    Column("last_status", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
)
Index(
    "ix_router_notification_due",
    notification.c.next_attempt_at,
    postgresql_where=notification.c.status == "pending",
    sqlite_where=notification.c.status == "pending",
)

notification_attempt = Table(
    "router_notification_attempt",
    metadata,
    Column("id", AutoIncrement, primary_key=True, autoincrement=True),
    Column(
        "notification_id",
        AutoIncrement,
        ForeignKey("router_notification.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    Column("attempt", Integer, nullable=False),
    Column("attempted_at", UTCDateTime, nullable=False),
    Column("duration_ms", Integer, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("status_code", Integer, nullable=True),
    Column("error", Text, nullable=True),
)

OUTBOX = outbox_tables(metadata, "router")
INBOX = inbox_tables(metadata, "router")
