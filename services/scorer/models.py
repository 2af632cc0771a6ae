"""scorer's tables. All are prefixed `scorer_`: the service owns them and no other reads them."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    PrimaryKeyConstraint,
    String,
    Table,
    false,
    text,
)

from shared.audit import audit_table
from shared.db import JSONType, UTCDateTime, service_metadata
from shared.inbox import inbox_tables
from shared.outbox import AutoIncrement, outbox_tables

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
    Column("stage", String(16), nullable=False, server_default=text("'lead'")),
    Column("stage_changed_at", UTCDateTime, nullable=True),
    Column("buying_signal", Boolean, nullable=False, server_default=false()),
    Column("active_at", UTCDateTime, nullable=True),
    Column("next_check_at", UTCDateTime, nullable=True),
    Column("erased_at", UTCDateTime, nullable=True),
    Column("received_at", UTCDateTime, nullable=True),
    Column("signal_tally", JSON, nullable=True),
)
"""One row per lead: its latest profile, score and stage. `scored_at` moves only when a
`lead.scored` is published; `updated_at` with every event applied; `active_at` with the lead's
latest signal or profile change; `next_check_at` is when decay alone will change its
temperature (the sweep looks at it then); `received_at` is when ingest received the lead (its
first `lead.received`), never changed afterwards, and carried by every `lead.scored`.
`signal_tally` is what scoring needs of the lead's signals (`services.scorer.signal_tally`;
plain JSON, never queried into), valid only with the row it was written with. An
erased lead keeps a row without personal data (`erased_at` set) so that later events about it
are ignored."""
Index("ix_scorer_lead_score_next_check_at", lead_score.c.next_check_at)

signal = Table(
    "scorer_signal",
    metadata,
    Column("lead_id", String(36), nullable=False),
    Column("signal_id", String(128), nullable=False),
    Column("signal_type", String(64), nullable=False),
    Column("signal_at", UTCDateTime, nullable=False),
    Column("url", String(2048), nullable=True),
    Column("source", String(100), nullable=True),
    Column("properties", JSONType, nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
    PrimaryKeyConstraint("lead_id", "signal_id"),
)
"""Each lead's signals, once each: the primary key drops a replayed signal."""

scoring_model = Table(
    "scorer_scoring_model",
    metadata,
    Column("id", AutoIncrement, primary_key=True, autoincrement=True),
    Column("version", String(64), nullable=False, unique=True),
    Column("document", JSONType, nullable=False),
    Column("source", String(16), nullable=False),
    Column("published_at", UTCDateTime, nullable=False),
)
"""Every published scoring model; the one with the highest id is in force. `source` is `file`
(published at start from the YAML file) or `api` (`PUT /v1/scoring-model`)."""

stage_change = Table(
    "scorer_stage_change",
    metadata,
    Column("id", AutoIncrement, primary_key=True, autoincrement=True),
    Column("lead_id", String(36), nullable=False),
    Column("from_stage", String(16), nullable=False),
    Column("to_stage", String(16), nullable=False),
    Column("reason", String(200), nullable=True),
    Column("cause", String(64), nullable=False),
    Column("cause_event_id", String(36), nullable=True),
    Column("rule_ids", JSONType, nullable=True),
    Column("changed_at", UTCDateTime, nullable=False),
)
"""The lifecycle history: every transition with its time and cause (the event type, or `crm`);
for MQL, the rules that added points at that moment."""
Index("ix_scorer_stage_change_lead_id", stage_change.c.lead_id, stage_change.c.id)

rejection = Table(
    "scorer_rejection",
    metadata,
    Column("id", AutoIncrement, primary_key=True, autoincrement=True),
    Column("lead_id", String(36), nullable=False),
    Column("assignment_id", String(36), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("reason_code", String(64), nullable=False),
    Column("lead_source", String(100), nullable=False),
    Column("recorded_at", UTCDateTime, nullable=False),
)
"""Sales' feedback: each SDR rejection or disqualification (`outcome`), with its reason code
and the lead's source. No free-text note is kept: it may hold personal data."""
Index("ix_scorer_rejection_recorded_at", rejection.c.recorded_at)

rejection_rule = Table(
    "scorer_rejection_rule",
    metadata,
    Column("rejection_id", AutoIncrement, ForeignKey("scorer_rejection.id"), nullable=False),
    Column("rule_id", String(64), nullable=False),
    PrimaryKeyConstraint("rejection_id", "rule_id"),
)
"""The rules that had made the rejected lead MQL, one row each, for the feedback report."""

channel_cost = Table(
    "scorer_channel_cost",
    metadata,
    Column("channel", String(100), primary_key=True),
    Column("cost_per_lead_cents", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)
"""What a lead of each channel (the lead's `attribution.channel`) costs, set by the admin,
for the funnel report's cost per lead, per SQL and per customer. Cents, so sums are exact."""

AUDIT = audit_table(metadata, "scorer")
OUTBOX = outbox_tables(metadata, "scorer")
INBOX = inbox_tables(metadata, "scorer")

__all__ = [
    "INBOX",
    "OUTBOX",
    "channel_cost",
    "lead_score",
    "metadata",
    "rejection",
    "rejection_rule",
    "scoring_model",
    "signal",
    "stage_change",
]
