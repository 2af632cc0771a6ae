"""HubSpot's thin webhook events become leads: their contacts fetched from the CRM, retried
from the database.

A thin event (`contact.creation`, `contact.propertyChange`...) of a source with a private app
token is kept as a lead-less submission and `enqueue`d, in the webhook's transaction, as a
row of `ingest_crm_fetch` due at once, unless a fetch of that contact is already waiting and
not started (it will read the contact as it is by then). `CrmFetcher.run`, a background loop
woken after the webhook's commit, claims due rows (a lease: `claimed_until`), calls HubSpot
outside any transaction (`services.ingest.vendors.hubspot_crm`), then records the outcome in
one transaction with its effect, only if its claim still holds:
- the contact read: its properties, through the vendor's and the source's field mapping, go
  the way of every submission (`service.submit_lead`: dedup by email, merge, outbox); the row
  is `done` with the lead's id. A contact without a usable email is `failed`, saying so;
- a `429`: due again after its `Retry-After`; a `5xx`, a `401`/`403`, a network error or a
  timeout: after a back-off doubling from `crm_fetch_backoff_seconds`. Each try counts; after
  `crm_fetch_max_attempts` the row is `failed` with the last error (so is a row whose tries
  never finish, a process dying on it each time);
- a `404`, another `4xx`, a refused URL, a source gone or without a token: `failed` at once.
Nothing waits in memory: a process stopped or killed between tries leaves the row due, and
one killed during a call leaves its claim to lapse (twice the call's time limit, plus 1 s);
any instance then takes the row, and the first one's late outcome, if it comes, is dropped.
On PostgreSQL instances claim with `FOR UPDATE SKIP LOCKED`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from pydantic import ValidationError
from sqlalchemy import delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from services.ingest import service
from services.ingest.bodies import raw_text, storable
from services.ingest.fields import canonical_fields, lenient_submission
from services.ingest.models import crm_fetch
from services.ingest.service import IngestContext, Intake
from services.ingest.sources import Source
from services.ingest.vendors import hubspot_crm
from services.ingest.vendors.hubspot_crm import Failed, Fetched, Outcome, Retry
from services.ingest.vendors.registry import field_mapping_of
from shared.after_commit import defer_until_commit
from shared.db import Database
from shared.loops import repeat
from shared.outbound import DestinationPolicy

logger = logging.getLogger(__name__)

PENDING, DONE, FAILED = "pending", "done", "failed"
CHANNEL = "crm"
"""The channel of the submissions made from fetched contacts."""
MAX_ERROR_CHARS = 500


async def enqueue(
    session: AsyncSession, context: IngestContext, source_key: str, contact_id: str
) -> None:
    """Fetch `contact_id` once this transaction commits (nothing new if a fetch of it waits)."""
    now = context.clock.now()
    waiting = await session.execute(
        select(crm_fetch.c.id).where(
            crm_fetch.c.source_key == source_key, crm_fetch.c.object_id == contact_id,
            crm_fetch.c.status == PENDING, _unclaimed(now),
        ).limit(1)
    )
    if waiting.first() is None:
        await session.execute(crm_fetch.insert().values(
            source_key=source_key, object_id=contact_id, status=PENDING, attempts=0,
            due_at=now, created_at=now,
        ))
    defer_until_commit(session, "crm-fetch-due", None, lambda _: context.crm_fetch_due.set())


async def purge_finished(session: AsyncSession, finished_before: datetime) -> int:
    """Delete the fetches that ended before `finished_before` (with the submissions)."""
    result = await session.execute(delete(crm_fetch).where(
        crm_fetch.c.status != PENDING, crm_fetch.c.finished_at < finished_before))
    return int(getattr(result, "rowcount", 0) or 0)


def _unclaimed(now: datetime) -> ColumnElement[bool]:
    return or_(crm_fetch.c.claimed_until.is_(None), crm_fetch.c.claimed_until <= now)


@dataclass(frozen=True)
class Claim:
    id: int
    source_key: str
    contact_id: str
    attempt: int
    """This try's number; the row's `attempts` while the claim holds."""


class CrmFetcher:
    """The background loop that works the due fetches."""

    def __init__(
        self, db: Database, context: IngestContext, *,
        destinations: DestinationPolicy | None = None,
    ) -> None:
        self.db = db
        self.context = context
        settings = context.settings
        self.destinations = destinations or DestinationPolicy(settings.allowed_webhook_urls)
        self.lease = timedelta(seconds=2 * settings.crm_fetch_timeout_seconds + 1)
        self._client: httpx.AsyncClient | None = None

    async def run(self) -> None:
        timeout = self.context.settings.crm_fetch_timeout_seconds
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
            self._client = client
            await repeat(self.tick, interval=0, name="crm-fetch")

    async def tick(self) -> bool:
        """Work the fetches due now; with none, wait to be woken or for the next poll."""
        due = self.context.crm_fetch_due
        due.clear()
        claims = await self.claim() if await self.any_due() else []
        if claims:
            async with asyncio.TaskGroup() as group:
                for claim in claims:
                    group.create_task(self.work(claim))
            return True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(due.wait(), self.context.settings.crm_fetch_poll_seconds)
        return True

    async def any_due(self) -> bool:
        """Whether a fetch is due and unclaimed, read without the write lock `claim` takes:
        an idle loop polls with a read."""
        now = self.context.clock.now()
        async with self.db.reading() as session:
            found = await session.scalar(
                select(crm_fetch.c.id)
                .where(crm_fetch.c.status == PENDING, crm_fetch.c.due_at <= now, _unclaimed(now))
                .limit(1))
        return found is not None

    async def claim(self) -> list[Claim]:
        now = self.context.clock.now()
        async with self.db.transaction() as session:
            rows = (await session.execute(
                select(crm_fetch.c.id, crm_fetch.c.source_key, crm_fetch.c.object_id,
                       crm_fetch.c.attempts)
                .where(crm_fetch.c.status == PENDING, crm_fetch.c.due_at <= now,
                       _unclaimed(now))
                .order_by(crm_fetch.c.due_at, crm_fetch.c.id)
                .limit(self.context.settings.crm_fetch_batch_size)
                .with_for_update(skip_locked=True)
            )).all()
            for row in rows:
                await session.execute(update(crm_fetch).where(crm_fetch.c.id == row.id).values(
                    attempts=row.attempts + 1, claimed_until=now + self.lease))
        return [Claim(row.id, row.source_key, row.object_id, row.attempts + 1) for row in rows]

    async def work(self, claim: Claim) -> None:
        """Try one claimed fetch and record how it went."""
        async with self.db.reading() as session:
            source = await self.context.sources.find(session, claim.source_key)
        outcome: Outcome
        if source is None or source.kind != "hubspot" or not source.crm_token:
            outcome = Failed(
                f"the source {claim.source_key!r} is gone or has no crm_token any more")
        elif claim.attempt > self._max_attempts:
            outcome = Failed(f"gave up: {self._max_attempts} tries did not finish")
        else:
            outcome = await self._fetch(source, source.crm_token, claim.contact_id)
        await self.record(claim, source, outcome)

    async def _fetch(self, source: Source, token: str, contact_id: str) -> Outcome:
        assert self._client is not None, "run() makes the client"
        settings = self.context.settings
        base = str(source.crm_base_url) if source.crm_base_url else settings.hubspot_api_url
        mapping = field_mapping_of(source.kind, source.field_mapping)
        url = hubspot_crm.contact_url(base, contact_id, mapping)
        return await hubspot_crm.fetch_contact(
            self._client, self.destinations, url=url, token=token,
            time_limit=settings.crm_fetch_timeout_seconds, now=self.context.clock.now(),
        )

    async def record(self, claim: Claim, source: Source | None, outcome: Outcome) -> None:
        try:
            async with self.db.transaction() as session:
                failure = await self._record(session, claim, source, outcome)
        except _ClaimLostError:
            logger.info("CRM fetch %d: another instance took it over", claim.id)
            return
        if failure is not None:
            logger.warning("CRM fetch %d of source %s failed: %s", claim.id, claim.source_key,
                           failure)

    async def _record(
        self, session: AsyncSession, claim: Claim, source: Source | None, outcome: Outcome
    ) -> str | None:
        """Write the outcome of a try; the error when the fetch failed for good."""
        now = self.context.clock.now()
        if isinstance(outcome, Fetched):
            lead_id = await self._submit(session, claim, source, outcome)
            if lead_id is not None:
                await self._settle(session, claim, status=DONE, lead_id=lead_id,
                                   finished_at=now, last_error=None)
                return None
            outcome = Failed("the contact has no usable email: no lead")
        if isinstance(outcome, Retry) and claim.attempt < self._max_attempts:
            wait = outcome.after_seconds
            if wait is None:
                wait = self._backoff(claim.attempt)
            await self._settle(session, claim, due_at=now + timedelta(seconds=wait),
                               last_error=_clipped(outcome.error))
            return None
        error = outcome.error
        if isinstance(outcome, Retry):
            error = f"gave up after {claim.attempt} tries: {error}"
        if not await self._settle(session, claim, status=FAILED, finished_at=now,
                                  last_error=_clipped(error)):
            return None
        return error

    async def _submit(
        self, session: AsyncSession, claim: Claim, source: Source | None, fetched: Fetched
    ) -> str | None:
        """Submit the contact as a lead if the claim still holds; its id, None without an
        email. A lapsed claim (another instance took the row) rolls everything back."""
        if not await self._holds(session, claim):
            raise _ClaimLostError
        if source is None:
            return None
        try:
            fields = canonical_fields(storable(fetched.properties),
                                      field_mapping_of(source.kind, source.field_mapping))
            submission = lenient_submission(fields)
        except ValidationError:
            return None
        intake = Intake(channel=CHANNEL, source_key=source.key, raw=raw_text(fetched.raw),
                        defaults=source.tag_defaults())
        accepted = await service.submit_lead(session, self.context, submission, intake)
        return accepted.lead_id

    async def _holds(self, session: AsyncSession, claim: Claim) -> bool:
        row = (await session.execute(
            select(crm_fetch.c.id).where(*self._claimed(claim)).with_for_update()
        )).first()
        return row is not None

    def _claimed(self, claim: Claim) -> tuple[ColumnElement[bool], ...]:
        return (crm_fetch.c.id == claim.id, crm_fetch.c.status == PENDING,
                crm_fetch.c.attempts == claim.attempt)

    async def _settle(self, session: AsyncSession, claim: Claim, **values: object) -> bool:
        """Write the try's outcome if the claim still holds; whether it did."""
        result = await session.execute(
            update(crm_fetch).where(*self._claimed(claim)).values(claimed_until=None, **values))
        return bool(getattr(result, "rowcount", 0))

    @property
    def _max_attempts(self) -> int:
        return self.context.settings.crm_fetch_max_attempts

    def _backoff(self, attempt: int) -> float:
        settings = self.context.settings
        delay: float = settings.crm_fetch_backoff_seconds * 2.0 ** (attempt - 1)
        return min(delay, settings.crm_fetch_max_backoff_seconds)


class _ClaimLostError(Exception):
    """Another instance took the fetch after this one's claim lapsed."""


def _clipped(error: str) -> str:
    return error[:MAX_ERROR_CHARS]
