"""router's tables. All are prefixed `router_`: the service owns them and no other reads them."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
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

from shared.audit import audit_table
from shared.db import JSONType, UTCDateTime, service_metadata
from shared.inbox import inbox_tables
from shared.outbox import AutoIncrement, outbox_tables

metadata = service_metadata()

ACTIVE_STATUSES = ("offered", "accepted", "contacted")
"""Assignment statuses that hold a lead: a lead has at most one assignment in them."""
OPEN_STATUSES = ACTIVE_STATUSES
"""Assignment statuses that count against a rep's capacity."""

# Everyone on the roster: SDRs, AEs and managers (the table kept its first name).
sdr = Table(
    "router_sdr",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("email", String(320), nullable=False, unique=True),
    Column("webhook_url", String(2048), nullable=True),
    Column("active", Boolean, nullable=False, default=True),
    Column("last_assigned_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("role", String(16), nullable=False, server_default="sdr"),
    Column("languages", JSONType, nullable=False, server_default="[]"),
    Column("territories", JSONType, nullable=False, server_default="[]"),
    Column("segments", JSONType, nullable=False, server_default="[]"),
    Column("timezone", String(64), nullable=False, server_default="UTC"),
    Column("working_hours", JSONType, nullable=True),
    Column("out_of_office", JSONType, nullable=False, server_default="[]"),
    Column("presence", String(16), nullable=False, server_default="available"),
    Column("capacity", Integer, nullable=True),
    Column("weight", Float, nullable=False, server_default="1"),
    Column("paused_until", UTCDateTime, nullable=True),
    # Encrypted (`shared.encryption`): a Slack incoming-webhook URL is itself a credential.
    Column("slack_webhook_url", Text, nullable=True),
    Column("webhook_secret", Text, nullable=True),
    Column("updated_at", UTCDateTime, nullable=True),
    # token_hash (String 64, unique) stays in the table, empty: tokens are in person_token.
)

# A person's API tokens: only their SHA-256 is kept; a revoked one stays, listed, refused.
person_token = Table(
    "router_person_token",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("person_id", String(36), ForeignKey("router_sdr.id"), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("label", String(200), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Index("ix_router_person_token_person_id", "person_id"),
)

team = Table(
    "router_team",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("manager_id", String(36), ForeignKey("router_sdr.id"), nullable=True),
    Column("timezone", String(64), nullable=False, server_default="UTC"),
    Column("working_hours", JSONType, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
)

membership = Table(
    "router_membership",
    metadata,
    Column("team_id", String(36), ForeignKey("router_team.id"), primary_key=True),
    Column("person_id", String(36), ForeignKey("router_sdr.id"), primary_key=True),
)

rule_set = Table(
    "router_rule_set",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("document", JSONType, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

account_owner = Table(
    "router_account_owner",
    metadata,
    Column("account_key", String(320), primary_key=True),
    Column("person_id", String(36), ForeignKey("router_sdr.id"), nullable=False),
    Column("assigned_at", UTCDateTime, nullable=False),
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
    # The team whose shared queue holds the lead (status `queued`).
    Column("queue_team_id", String(36), nullable=True),
    Column("queued_at", UTCDateTime, nullable=True),
    Column("source", String(100), nullable=True),
    # When ingest received the lead (from `lead.scored`; None from older scorers).
    Column("received_at", UTCDateTime, nullable=True),
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
    Column("role", String(8), nullable=False, server_default="sdr"),
    Column("team_id", String(36), nullable=True),
    Column("rule_id", String(64), nullable=True),
    Column("rules_version", String(32), nullable=True),
    Column("decision", JSONType, nullable=True),
    Column("contact_deadline_at", UTCDateTime, nullable=True),
    Column("reminder_at", UTCDateTime, nullable=True),
    Column("contacted_at", UTCDateTime, nullable=True),
    Column("qualified_at", UTCDateTime, nullable=True),
    Column("contact_breached_at", UTCDateTime, nullable=True),
    Column("bant", JSONType, nullable=True),
    Column("reason_code", String(64), nullable=True),
    Column("note", Text, nullable=True),
    Column("scored_at", UTCDateTime, nullable=True),
    Column("notified_at", UTCDateTime, nullable=True),
    Column("source", String(100), nullable=True),
    # The lead's reception and score behind this offer, for the speed-to-lead hops.
    Column("received_at", UTCDateTime, nullable=True),
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
Index(
    "ix_router_assignment_reminder",
    assignment.c.reminder_at,
    postgresql_where=assignment.c.status == "offered",
    sqlite_where=assignment.c.status == "offered",
)
Index(
    "ix_router_assignment_contact_due",
    assignment.c.contact_deadline_at,
    postgresql_where=assignment.c.status == "accepted",
    sqlite_where=assignment.c.status == "accepted",
)
Index("ix_router_assignment_sdr", assignment.c.sdr_id, assignment.c.status)

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
        "assignment_id", String(36), ForeignKey("router_assignment.id"), nullable=True, index=True
    ),
    Column("sdr_id", String(36), ForeignKey("router_sdr.id"), nullable=True),
    # The generic webhook's URL; for Slack `slack:<digest of the URL>`, the URL itself being
    # a secret read (decrypted) from the person's row when the message is sent.
    Column("url", String(2048), nullable=False),
    # generic (Standard Webhooks signed JSON) | slack; `kind` says what the message is about.
    Column("channel", String(16), nullable=False, server_default="generic"),
    Column("kind", String(32), nullable=False, server_default="offer"),
    Column("message_id", String(64), nullable=True),
    Column("payload", JSONType, nullable=False),
    # pending -> delivered | failed (gave up) | cancelled (the offer closed first)
    Column("status", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime, nullable=True),
    Column("last_status", Integer, nullable=True),
    Column("last_error", Text, nullable=True),
    # The span that queued it, parent of the delivery's span (`shared.tracing`).
    Column("traceparent", String(55), nullable=True),
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

disabled_endpoint = Table(
    "router_disabled_endpoint",
    metadata,
    Column("url", String(2048), primary_key=True),
    Column("disabled_at", UTCDateTime, nullable=False),
    Column("reason", String(200), nullable=False),
)
"""Webhook URLs that answered `410 Gone`: nothing is sent to them any more."""

roster_state = Table(
    "router_roster_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    # Bumped in the same transaction as any change to people, teams, memberships or rules.
    Column("generation", BigInteger, nullable=False, server_default="0"),
    # Bumped by every transaction that routes (under the routing lock).
    Column("routing_seq", BigInteger, nullable=False, server_default="0"),
)
"""One row (id 1): the counters that tell each router instance whether its roster cache is
still current (see `services.router.roster_cache`)."""

handover = Table(
    "router_handover",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("lead_id", String(36), ForeignKey("router_lead.id"), nullable=False, index=True),
    Column("from_assignment_id", String(36), ForeignKey("router_assignment.id"), nullable=False),
    # waiting: no AE was eligible yet, retried at `next_attempt_at`; offered: an AE has it.
    Column("status", String(16), nullable=False),
    Column("requested_at", UTCDateTime, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_attempt_at", UTCDateTime, nullable=False),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("manager_notified_at", UTCDateTime, nullable=True),
    # One entry per attempt that found nobody: when, and every pool tried with its exclusions.
    Column("attempt_log", JSONType, nullable=False),
    Column("assignment_id", String(36), ForeignKey("router_assignment.id"), nullable=True),
    Column("handed_at", UTCDateTime, nullable=True),
)
"""A qualified lead's hand-over to an AE, kept until an AE is offered it."""
Index(
    "ix_router_handover_due",
    handover.c.next_attempt_at,
    postgresql_where=handover.c.status == "waiting",
    sqlite_where=handover.c.status == "waiting",
)

AUDIT = audit_table(metadata, "router")
OUTBOX = outbox_tables(metadata, "router")
INBOX = inbox_tables(metadata, "router")
