"""The console's tables: one-time sign-in links and signed-in sessions (only hashes stored);
a session with no person is the admin's."""

from __future__ import annotations

from sqlalchemy import Column, ForeignKey, String, Table

from services.router.models import metadata
from shared.db import UTCDateTime

sign_in_link = Table(
    "router_sign_in_link",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("person_id", String(36), ForeignKey("router_sdr.id"), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("used_at", UTCDateTime, nullable=True),
)

console_session = Table(
    "router_console_session",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("person_id", String(36), ForeignKey("router_sdr.id"), nullable=True, index=True),
    # None: the admin's session (signed in with the admin token)
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
)
