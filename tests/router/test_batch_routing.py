"""The batch path for `lead.scored` (`RouterConsumer`) has the outcome of applying the same
events one by one: same reps, statuses, attempts, decisions, lead rows, events and
notifications; and the database still refuses a second active assignment in a batch."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from services.router import repository
from services.router.models import OUTBOX, assignment, lead, notification, sdr
from services.router.service import RouterContext
from shared.clock import ManualClock
from shared.db import Database
from shared.events import Envelope
from shared.outbox import Outbox
from tests.conftest import create_pg_database, drop_pg_database, migrate, pg_url
from tests.router.conftest import Router, router_settings, scored
from tests.support import counted


@pytest.fixture
def twin_url(router_url: str, tmp_path: Path) -> Iterator[str]:
    """A second, empty router database of the same kind as `router_url`."""
    if router_url.startswith("sqlite"):
        url = f"sqlite+aiosqlite:///{tmp_path / 'twin.db'}"
        migrate("router", url)
        yield url
        return
    name = create_pg_database()
    try:
        migrate("router", pg_url(name))
        yield pg_url(name)
    finally:
        drop_pg_database(name)


@pytest.fixture
async def twin(twin_url: str) -> AsyncIterator[Router]:
    settings = router_settings(twin_url)
    clock = ManualClock()
    db = Database(settings.database_url)
    outbox = Outbox(OUTBOX, topic=settings.topics.assignments, shards=settings.outbox_shards,
                    clock=clock)
    try:
        yield Router(db, clock, settings, RouterContext.build(settings, outbox, clock))
    finally:
        await db.dispose()


async def build_roster(router: Router) -> None:
    await router.add_team("Core")
    await router.add_person("Ada", teams=["Core"], languages=["en", "fr"], capacity=3,
                            webhook_url="http://127.0.0.1:9/ada")
    router.clock.advance(1)
    await router.add_person("Bob", teams=["Core"], languages=["en"], capacity=4, weight=2,
                            webhook_url="http://127.0.0.1:9/bob")
    router.clock.advance(1)
    await router.add_person("Cyd", teams=["Core"], languages=["de"], capacity=1,
                            slack_webhook_url="http://127.0.0.1:9/cyd")
    router.clock.advance(1)
    await router.add_person("Dee", teams=["Core"], presence="away")
    router.clock.advance(1)
    await router.add_person("Eve", languages=["fr"])  # in no team: only the fallback rule
    await router.set_rules(
        {"id": "french", "when": {"country": "FR"}, "pool": "Core", "strategy": "least_loaded"},
        {"id": "hot", "when": {"temperature": "hot"}, "pool": "Core",
         "strategy": "weighted_fairness"},
        {"id": "rest", "strategy": "round_robin"},
    )


def events_for(clock: ManualClock) -> list[Envelope]:
    """A batch with everything routing a score can meet."""
    older = clock.now() - timedelta(minutes=5)
    stale_clock = ManualClock(older)
    again = scored("lead-02", clock=clock, score=40.0, temperature="cold")
    events: list[Envelope] = [
        scored("lead-01", clock=clock, country="FR", language="fr"),
        scored("lead-02", clock=clock),
        scored("lead-03", "warm", clock=clock, language="de"),
        scored("lead-04", "cold", clock=clock, score=12.0),
        scored("lead-05", clock=clock, language="de"),
        scored("lead-06", "warm", clock=clock),
        again,
        again,  # redelivered in the same batch
        scored("lead-03", clock=stale_clock, score=99.0),  # older than the one recorded
        scored("lead-07", clock=clock, country="FR", language="fr"),
        scored("lead-04", "warm", clock=clock, score=55.0),  # cold, then warm: routed
    ]
    events += [scored(f"lead-{n:02d}", clock=clock, language="en") for n in range(8, 16)]
    events.append(scored("lead-16", "cold", clock=clock, score=5.0))
    return events


async def outcome(router: Router) -> dict[str, Any]:
    """Everything the events produced, with generated ids replaced by names and order."""
    async with router.db.reading() as session:
        people = {row.id: row.name for row in await session.execute(select(sdr))}
        offers = (await session.execute(
            select(assignment).order_by(assignment.c.lead_id, assignment.c.attempt)
        )).mappings().all()
        leads = (await session.execute(select(lead).order_by(lead.c.id))).mappings().all()
        deliveries = (await session.execute(
            select(notification).order_by(notification.c.id))).mappings().all()
    names = {**people, None: None}
    offer_lead = {row["id"]: row["lead_id"] for row in offers}

    def decision(pools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{
            **tried, "team_id": None,
            "rep_id": names.get(tried.get("rep_id")),
            "candidates": [names[rep] for rep in tried.get("candidates", [])],
            "excluded": {names[rep]: reasons for rep, reasons in tried.get("excluded", {}).items()},
            "scores": {names[rep]: value for rep, value in tried.get("scores", {}).items()},
            "explained": {part: {names[rep]: text for rep, text in words.items()}
                          for part, words in tried.get("explained", {}).items()
                          if isinstance(words, dict)} | {
                "lines": tried.get("explained", {}).get("lines")},
        } for tried in pools]

    events = await router.events()
    return {
        "offers": [(row["lead_id"], names[row["sdr_id"]], row["status"], row["attempt"],
                    row["rule_id"], row["offered_at"], row["deadline_at"],
                    decision(row["decision"]["pools"]))
                   for row in offers],
        "leads": [(row["id"], row["status"], row["score"], row["temperature"],
                   row["scored_at"], row["waiting_since"], row["updated_at"], row["profile"])
                  for row in leads],
        "events": [(event["lead_id"], event["type"], names.get(event["data"].get("sdr_id")))
                   for event in events],
        "deliveries": [(offer_lead.get(row["assignment_id"]), names[row["sdr_id"]],
                        row["channel"], row["kind"], row["url"]) for row in deliveries],
        "marks": sorted((name, row) for name, row in (await marks(router)).items()),
    }


async def marks(router: Router) -> dict[str, Any]:
    async with router.db.reading() as session:
        rows = await session.execute(select(sdr.c.name, sdr.c.last_assigned_at))
    return {row[0]: row[1] for row in rows}


async def test_a_batch_routes_exactly_as_one_event_at_a_time(
    router: Router, twin: Router, caplog: pytest.LogCaptureFixture
) -> None:
    for each in (router, twin):
        await build_roster(each)
    events = events_for(router.clock)
    with caplog.at_level(logging.WARNING):
        await router.consume(*events)  # RouterConsumer: one batch, the fast path
    assert "fast path failed" not in caplog.text
    for event in events:  # the shared loop, one transaction per event
        await twin.consume(event, consumer=twin.consumer(one_by_one=True))
    batch, one_by_one = await outcome(router), await outcome(twin)
    assert batch == one_by_one
    # The scenario is worth comparing: offers, waits, nurture and skipped events all happen.
    statuses = {row[1] for row in batch["leads"]}
    assert {"routed", "waiting", "cold"} <= statuses
    assert {row[4] for row in batch["offers"]} == {"french", "hot", "rest"}
    assert ("lead-04", "lead.nurture", None) in batch["events"]


async def test_a_second_batch_sees_the_first(router: Router, twin: Router) -> None:
    """Across batches (cache carried over) the outcome is still the one-by-one one."""
    for each in (router, twin):
        await build_roster(each)
    events = events_for(router.clock)
    for first in range(0, len(events), 4):
        await router.consume(*events[first:first + 4])
        router.clock.advance(7)
    for first, event in enumerate(events):
        await twin.consume(event, consumer=twin.consumer(one_by_one=True))
        if first % 4 == 3:
            twin.clock.advance(7)
    assert await outcome(router) == await outcome(twin)


async def test_the_database_refuses_a_double_assignment_made_in_a_batch(
    router: Router, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ada = await router.add_sdr("Ada")
    await router.consume(scored("lead-1", clock=router.clock))
    router.clock.advance(1)

    async def blind(session: Any, lead_ids: Any) -> set[str]:
        return set()  # as if another instance's offer had not been seen

    monkeypatch.setattr(repository, "leads_with_active_assignment", blind)
    with caplog.at_level(logging.WARNING):
        await router.consume(scored("lead-1", clock=router.clock, score=95.0),
                             scored("lead-2", clock=router.clock))
    assert "fast path failed (IntegrityError)" in caplog.text
    [offer] = await router.assignments("lead-1")  # the fallback kept the first one only
    assert offer["sdr_id"] == ada and offer["status"] == "offered"
    assert len(await router.assignments("lead-2")) == 1
    offered = router.context.metrics.assignments.labels(role="sdr", strategy="round_robin")
    assert counted(offered) == 2  # the rolled-back fast path counted nothing
