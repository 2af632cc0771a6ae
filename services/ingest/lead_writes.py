"""The writes of a group of lead submissions, gathered and sent as a few bulk statements.

When `shared.group_commit` applies a group, `begin_group` reads at once (`FOR UPDATE`) every
lead the group's requests name by email and puts a `LeadWrites` in the session. Each
submission of the group is then decided in memory against the current state of its lead (a
second submission of an email merges into what the first made of it, as if they came one
after the other), and its rows are queued: new leads, changed leads, raw submissions and
outbox events, in arrival order. `end_group` sends them as one statement per table before the
commit. A unit that runs its own statements calls `flush` first, so they see (and follow)
everything queued before them. A unique conflict (another process created the same email a
moment ago) surfaces at the flush and fails the group, which then applies each unit alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.ingest import repository
from services.ingest.repository import EarlierSubmission
from shared.events import Envelope
from shared.group_commit import Finish, Prepare
from shared.outbox import Outbox
from shared.tracing import pin_to_lead

SESSION_KEY = "ingest_lead_writes"


@dataclass
class LeadWrites:
    """Queued writes of one group, and the state of every lead it has seen."""

    outbox: Outbox
    leads: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    """By email: the lead's row as it will be after the queued writes; None when none exists."""
    new: dict[str, dict[str, Any]] = field(default_factory=dict)
    changed: dict[str, dict[str, Any]] = field(default_factory=dict)
    submissions: list[dict[str, Any]] = field(default_factory=list)
    events: list[Envelope] = field(default_factory=list)
    senders_ids: dict[tuple[str, str], str | None] = field(default_factory=dict)
    """(source key, external id) -> lead id of every submission this group recorded."""

    async def load(self, session: AsyncSession, emails: Sequence[str]) -> None:
        """Read (and lock) the leads of `emails` this group has not seen yet."""
        missing = sorted({email for email in emails if email not in self.leads})
        if not missing:
            return
        found = await repository.find_leads_by_email_for_update(session, missing)
        for email in missing:
            row = found.get(email)
            self.leads[email] = dict(row) if row is not None else None

    async def lead(self, session: AsyncSession, email: str) -> dict[str, Any] | None:
        if email not in self.leads:
            await self.load(session, [email])
        return self.leads[email]

    def create(self, row: dict[str, Any]) -> None:
        self.leads[row["email"]] = row
        self.new[row["id"]] = row

    def change(self, row: dict[str, Any], changes: dict[str, Any]) -> None:
        """Apply `changes` to `row` (a row this group holds) and queue its update."""
        row.update(changes)
        if row["id"] not in self.new:
            self.changed[row["id"]] = row

    def record(self, values: dict[str, Any]) -> None:
        self.submissions.append(values)
        if values["source_key"] is not None and values["external_id"] is not None:
            self.senders_ids[(values["source_key"], values["external_id"])] = values["lead_id"]

    def queued_submission(self, source_key: str, external_id: str) -> EarlierSubmission | None:
        """The submission with this sender's id this group queued (the database cannot see
        it yet)."""
        if (source_key, external_id) not in self.senders_ids:
            return None
        return EarlierSubmission(self.senders_ids[(source_key, external_id)])

    def publish(self, event: Envelope) -> None:
        self.events.append(event)
        pin_to_lead(event.lead_id)  # the outbox row, written at the flush, keeps its trace

    async def flush(self, session: AsyncSession) -> None:
        """Send everything queued, in an order the foreign keys accept."""
        if self.new:
            # In email order, as the leads are locked: two processes inserting the same new
            # emails then wait on each other in one order instead of deadlocking.
            await repository.insert_leads(
                session, sorted(self.new.values(), key=lambda row: str(row["email"])))
        if self.changed:
            await repository.update_leads(session, list(self.changed.values()))
        if self.submissions:
            await repository.record_submissions(session, self.submissions)
        if self.events:
            await self.outbox.add(session, *self.events)
        self.new, self.changed, self.submissions, self.events = {}, {}, [], []


def lead_writes(session: AsyncSession) -> LeadWrites | None:
    """The group's queued writes, when `session` applies a group."""
    writes: LeadWrites | None = session.info.get(SESSION_KEY)
    return writes


async def flush(session: AsyncSession) -> None:
    """Before a statement of its own, a unit sends what the group queued before it."""
    writes = lead_writes(session)
    if writes is not None:
        await writes.flush(session)


def group_hooks(outbox: Outbox) -> tuple[Prepare, Finish]:
    """`prepare` and `finish` for `GroupCommit`: emails named by the units are the hints."""

    async def begin_group(session: AsyncSession, hints: Sequence[Any]) -> None:
        writes = LeadWrites(outbox)
        session.info[SESSION_KEY] = writes
        emails: list[str] = []
        for hint in hints:
            emails.extend([hint] if isinstance(hint, str) else hint)
        await writes.load(session, emails)

    async def end_group(session: AsyncSession) -> None:
        writes = session.info.pop(SESSION_KEY)
        await writes.flush(session)

    return begin_group, end_group
