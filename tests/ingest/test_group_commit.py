"""Group commit of lead writes: merges in arrival order, bad units alone, several instances.

These drive ingest's service functions through a real `GroupCommit` writer on a real
database (SQLite and PostgreSQL), without HTTP: the order in which units reach the writer is
then the order the tasks were created in, so a group's content is known exactly.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from services.ingest import batches, service
from services.ingest.idempotency import IdempotentRequests
from services.ingest.lead_writes import group_hooks
from services.ingest.models import OUTBOX, lead, submission
from services.ingest.schemas import LeadAccepted, LeadSubmission
from services.ingest.service import FormLimits, IngestContext
from services.ingest.settings import IngestSettings
from services.ingest.signal_batches import record_signal
from services.ingest.signals import SignalInput
from services.ingest.sources import SourceRegistry
from shared.clock import SystemClock
from shared.db import Database
from shared.encryption import SecretBox
from shared.group_commit import GroupCommit
from shared.outbox import Outbox
from shared.problems import ProblemError
from tests.conftest import migrate
from tests.support import opened


@dataclass
class Instance:
    """One ingest process's writer: its own engine, outbox and group commit."""

    db: Database
    context: IngestContext
    writes: GroupCommit

    async def submit(
        self, fields: dict[str, Any], intake: service.Intake | None = None,
    ) -> LeadAccepted:
        submission_ = LeadSubmission.model_validate(fields)

        async def work(session: AsyncSession) -> LeadAccepted:
            return await service.submit_lead(session, self.context, submission_, intake)

        return await self.writes.run(work, submission_.email)


def instance(database_url: str) -> Instance:
    db = Database(database_url)
    clock = SystemClock()
    outbox = Outbox(OUTBOX, topic="leads", shards=16, clock=clock)
    begin_group, end_group = group_hooks(outbox)
    writes = GroupCommit(db, prepare=begin_group, finish=end_group)
    settings = IngestSettings(database_url=database_url)
    context = IngestContext(
        outbox=outbox, clock=clock, settings=settings,
        sources=SourceRegistry({}, SecretBox.from_environment()),
        form_limits=FormLimits.of(settings),
        idempotency=IdempotentRequests(db, clock, writes), writes=writes,
    )
    return Instance(db, context, writes)


@pytest.fixture
def migrated_url(database_url: str) -> str:
    migrate("ingest", database_url)
    return database_url


@pytest.fixture
async def instances(migrated_url: str) -> AsyncIterator[Callable[[], Instance]]:
    """Makes running instances on one migrated database; stops them afterwards."""
    database_url = migrated_url
    started: list[tuple[Instance, asyncio.Task[None]]] = []

    def start() -> Instance:
        running = instance(database_url)
        started.append((running, asyncio.create_task(running.writes.run_writer())))
        return running

    yield start
    for running, task in started:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await running.db.dispose()


async def rows(db: Database, table: Any) -> list[dict[str, Any]]:
    async with db.reading() as session:
        result = await session.execute(select(table))
        return [dict(row) for row in result.mappings().all()]


async def events_by_lead(db: Database) -> dict[str, list[dict[str, Any]]]:
    """Each lead's outbox events, decoded, in the order the relay publishes them."""
    by_lead: dict[str, list[dict[str, Any]]] = {}
    for row in sorted(await rows(db, OUTBOX.events), key=lambda row: row["id"]):
        by_lead.setdefault(row["message_key"], []).append(json.loads(row["payload"]))
    return by_lead


async def test_same_email_in_one_group_merges_in_arrival_order(
    instances: Callable[[], Instance],
) -> None:
    writer = instances()
    await asyncio.sleep(0)  # the writer task is waiting for work
    submissions = [
        {"email": "Ada@Acme.io", "name": "Ada One"},
        {"email": "ada@acme.io", "name": "Ada Two", "company": "Acme"},
        {"email": "bob@acme.io", "name": "Bob"},
        {"email": "ada@acme.io ", "name": "Ada Three", "company": ""},
        {"email": "ada@acme.io", "name": "Ada Three"},
    ]
    tasks = [asyncio.create_task(writer.submit(fields)) for fields in submissions]
    answers = await asyncio.gather(*tasks)

    assert writer.writes.largest_group == len(submissions)
    assert writer.writes.commits == 1
    assert [answer.status for answer in answers] == [
        "created", "merged", "created", "merged", "unchanged"]
    ada = answers[0].lead_id
    assert {answer.lead_id for answer in answers} == {ada, answers[2].lead_id}
    stored = {row["email"]: row for row in await rows(writer.db, lead)}
    assert set(stored) == {"ada@acme.io", "bob@acme.io"}
    assert (stored["ada@acme.io"]["name"], stored["ada@acme.io"]["company"]) == (
        "Ada Three", "Acme")
    assert len(await rows(writer.db, submission)) == len(submissions)
    events = (await events_by_lead(writer.db))[ada]
    assert [event["type"] for event in events] == ["lead.received", "lead.updated",
                                                    "lead.updated"]
    assert events[0]["data"]["lead"]["name"] == "Ada One"
    assert events[1]["data"]["changed_fields"] == ["company", "name"]
    assert events[2]["data"]["changed_fields"] == ["name"]
    assert events[2]["data"]["lead"] | {"name": None} == events[1]["data"]["lead"] | {
        "name": None}


def varied_submissions() -> list[tuple[dict[str, Any], service.Intake]]:
    """Creations, merges of plain and nested fields, resubmissions that change nothing."""
    given_at = "2024-05-01T09:00:00+00:00"
    submissions = [
        ({"email": f"p{number % 4}@acme.io", "name": f"Person {number}",
          "job_title": "CTO" if number % 3 else None, "country": "fr" if number % 2 else None,
          "demo_requested": number % 5 == 1,
          "consent": {"email": number % 2 == 0, "given_at": given_at},
          "attribution": {"utm_source": f"src{number % 3}"}},
         service.Intake(correlation_id=f"corr-{number}",
                        defaults={"channel": "web", "source": "form"}))
        for number in range(12)
    ]
    again = submissions[-1]
    return [*submissions, again, ({"email": "p3@acme.io", "company": "Zeta", "language": "de",
                                   "website": "https://zeta.example"}, service.Intake())]


async def test_group_result_matches_one_at_a_time(instances: Callable[[], Instance]) -> None:
    """The same submissions, grouped or each in its own transaction, answer the same and leave
    the same leads and the same events: every field but ids and times."""
    submissions = varied_submissions()
    grouped, alone = instances(), instances()
    await asyncio.sleep(0)
    answers = await asyncio.gather(*[asyncio.create_task(grouped.submit(fields, intake))
                                     for fields, intake in submissions])
    assert grouped.writes.largest_group == len(submissions)
    results = {}
    for name, writer in (("grouped", grouped), ("alone", alone)):
        if name == "alone":
            async with writer.db.transaction() as session:
                await session.execute(lead.delete())
                await session.execute(OUTBOX.events.delete())
            answers = [await writer.submit(fields, intake) for fields, intake in submissions]
            assert writer.writes.largest_group == 1
        results[name] = await stored_without_ids(writer.db, answers)
    assert {status for status, _ in results["alone"][0]} == {"created", "merged", "unchanged"}
    assert results["grouped"] == results["alone"]


async def stored_without_ids(
    db: Database, answers: list[LeadAccepted],
) -> tuple[list[Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """The answers, leads and events (in publishing order), each lead named by its email."""
    stored = sorted(await rows(db, lead), key=lambda row: row["email"])
    email_of = {row["id"]: row["email"] for row in stored}
    events = opened([json.loads(row["payload"]) for row in
                     sorted(await rows(db, OUTBOX.events), key=lambda row: row["id"])],
                    {row["id"]: row["data_key"] for row in stored})
    return (
        [(answer.status, email_of[answer.lead_id]) for answer in answers],
        [{key: value for key, value in row.items()
          if key not in {"id", "created_at", "updated_at", "data_key"}} for row in stored],
        [{**{key: value for key, value in event.items()
             if key not in {"event_id", "occurred_at"}},
          "lead_id": email_of[event["lead_id"]]} for event in events],
    )


async def test_a_failing_unit_does_not_fail_its_neighbours(
    instances: Callable[[], Instance],
) -> None:
    writer = instances()
    await asyncio.sleep(0)

    async def unknown_lead_signal(session: AsyncSession) -> Any:
        signal = SignalInput(type="email_open", lead_id="00000000-0000-0000-0000-000000000000")
        return await record_signal(session, writer.context, signal)

    async def broken(session: AsyncSession) -> Any:
        await service.submit_lead(session, writer.context,
                                  LeadSubmission(email="broken@acme.io"))
        raise RuntimeError("this unit fails after queueing its writes")

    first = asyncio.create_task(writer.submit({"email": "one@acme.io", "name": "One"}))
    bad_signal = asyncio.create_task(writer.writes.run(unknown_lead_signal))
    bad = asyncio.create_task(writer.writes.run(broken, "broken@acme.io"))
    second = asyncio.create_task(writer.submit({"email": "two@acme.io"}))
    again = asyncio.create_task(writer.submit({"email": "one@acme.io", "company": "Acme"}))
    await asyncio.wait([first, bad_signal, bad, second, again])

    assert writer.writes.fallbacks == 1
    assert [task.result().status for task in (first, second, again)] == [
        "created", "created", "merged"]
    with pytest.raises(ProblemError) as not_found:
        bad_signal.result()
    assert not_found.value.status == 404
    with pytest.raises(RuntimeError):
        bad.result()
    stored = {row["email"]: row for row in await rows(writer.db, lead)}
    assert set(stored) == {"one@acme.io", "two@acme.io"}
    assert stored["one@acme.io"]["company"] == "Acme"
    assert len(await rows(writer.db, submission)) == 3
    events = await events_by_lead(writer.db)
    assert sorted(len(lead_events) for lead_events in events.values()) == [1, 2]


async def test_signals_in_a_group_follow_their_lead_event(
    instances: Callable[[], Instance],
) -> None:
    writer = instances()
    await asyncio.sleep(0)

    def signal_unit(signal: SignalInput) -> Any:
        async def work(session: AsyncSession) -> Any:
            return await record_signal(session, writer.context, signal)
        return work

    units = [
        writer.submit({"email": "sig@acme.io", "name": "Sig"}),
        writer.writes.run(signal_unit(SignalInput(email="sig@acme.io", type="email_open",
                                                  signal_id="s1")), "sig@acme.io"),
        writer.writes.run(signal_unit(SignalInput(email="new@acme.io", type="page_view",
                                                  signal_id="s2")), "new@acme.io"),
        writer.writes.run(signal_unit(SignalInput(email="sig@acme.io", type="email_open",
                                                  signal_id="s1")), "sig@acme.io"),
        writer.submit({"email": "new@acme.io", "name": "New"}),
    ]
    answers = await asyncio.gather(*[asyncio.create_task(unit) for unit in units])

    assert writer.writes.largest_group == len(units) and writer.writes.fallbacks == 0
    assert [answer.status for answer in answers] == [
        "created", "recorded", "recorded", "duplicate", "merged"]
    assert answers[2].lead_created is True
    events = await events_by_lead(writer.db)
    assert [event["type"] for event in events[answers[0].lead_id]] == [
        "lead.received", "signal.recorded"]
    assert [event["type"] for event in events[answers[2].lead_id]] == [
        "lead.received", "signal.recorded", "lead.updated"]


async def test_two_instances_store_each_email_once(instances: Callable[[], Instance]) -> None:
    """Several ingest processes on one database: uniqueness holds, every submission counts."""
    first, second = instances(), instances()
    await asyncio.sleep(0)
    emails = [f"shared{number}@acme.io" for number in range(15)]
    rng = random.Random(3)
    plans = []
    for writer in (first, second):
        for round_number in range(2):
            order = emails[:]
            rng.shuffle(order)
            plans.extend((writer, {"email": email, "name": f"N{round_number}",
                                   "job_title": f"T{rng.randint(0, 9)}"}) for email in order)
    rng.shuffle(plans)
    answers = await asyncio.gather(*[asyncio.create_task(writer.submit(fields))
                                     for writer, fields in plans])

    assert max(first.writes.largest_group, second.writes.largest_group) > 1
    stored = await rows(first.db, lead)
    assert sorted(row["email"] for row in stored) == sorted(emails)
    ids = {row["email"]: row["id"] for row in stored}
    created = [answer.lead_id for answer in answers if answer.status == "created"]
    assert sorted(created) == sorted(ids.values())
    assert {answer.lead_id for answer in answers} == set(ids.values())
    assert len(await rows(first.db, submission)) == len(plans)
    for lead_events in (await events_by_lead(first.db)).values():
        types = [event["type"] for event in lead_events]
        assert types[0] == "lead.received" and "lead.received" not in types[1:]


async def test_batches_in_one_group_see_each_others_external_ids(
    instances: Callable[[], Instance],
) -> None:
    writer = instances()
    await asyncio.sleep(0)
    intake = service.Intake(channel="batch", source_key="crm")

    def batch_unit(items: list[dict[str, Any]]) -> Any:
        async def work(session: AsyncSession) -> Any:
            return await batches.submit_batch(session, writer.context, items, intake)
        return work

    first = [{"email": "x1@acme.io", "external_id": "row-1"},
             {"email": "x2@acme.io", "external_id": "row-2"},
             {"email": "x1@acme.io", "name": "X", "external_id": "row-1"}]
    second = [{"email": "x2@acme.io", "name": "Two", "external_id": "row-2"},
              {"email": "x3@acme.io", "external_id": "row-3"}]
    answers = await asyncio.gather(*[asyncio.create_task(writer.writes.run(batch_unit(items)))
                                     for items in (first, second)])

    assert writer.writes.largest_group == 2 and writer.writes.fallbacks == 0
    assert [[item.status for item in answer] for answer in answers] == [
        ["created", "created", "duplicate"], ["duplicate", "created"]]
    assert len(await rows(writer.db, submission)) == 3
    assert {row["email"]: row["name"] for row in await rows(writer.db, lead)} == {
        "x1@acme.io": None, "x2@acme.io": None, "x3@acme.io": None}
