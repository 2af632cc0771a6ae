"""The received -> scored hop of speed to lead: the router keeps `lead.scored`'s `received_at`
on the lead and each assignment, on its batch path and one event at a time, and the report
shows the hop first, overall and per team, rep and source. A `lead.scored` from an older
scorer (no `received_at`) still routes; the lead keeps a reception an earlier score gave."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition

from services.router import reports, repository
from services.router.models import lead as lead_table
from shared.events import LeadScored
from tests.router.conftest import SCORES_TOPIC, Router, scored


def received_before(router: Router, lead_id: str, seconds: float, **profile: Any) -> LeadScored:
    """A `lead.scored` published now, of a lead ingest received `seconds` earlier."""
    event = scored(lead_id, clock=router.clock, **profile)
    received_at = router.clock.now() - timedelta(seconds=seconds)
    return event.model_copy(
        update={"data": event.data.model_copy(update={"received_at": received_at})})


async def report(router: Router) -> dict[str, Any]:
    since = router.clock.now() - timedelta(days=1)
    until = router.clock.now() + timedelta(seconds=1)
    async with router.db.reading() as session:
        rows = [dict(row) for row in await repository.assignments_between(session, since, until)]
    return reports.speed_to_lead(rows)


@pytest.mark.parametrize("one_by_one", [False, True], ids=["batch", "one-by-one"])
async def test_the_report_shows_received_to_scored_first_per_team_rep_and_source(
    router: Router, one_by_one: bool
) -> None:
    north_team = await router.add_team("North")
    south_team = await router.add_team("South")
    north = await router.add_person("Nora", teams=["North"])
    south = await router.add_person("Sam", teams=["South"])
    await router.set_rules({"id": "north", "when": {"country": "NO"}, "pool": "North"},
                           {"id": "south", "pool": "South"})
    events = [
        received_before(router, "web-north", 1.5, country="NO", source="web"),
        received_before(router, "web-south", 3, country="ES", source="web"),
        received_before(router, "partner-south", 7, country="ES", source="partner"),
    ]
    await router.consume(*events, consumer=router.consumer(one_by_one=one_by_one))

    for event in events:
        [offer] = await router.assignments(event.lead_id)
        assert offer["received_at"] == event.data.received_at
    found = await report(router)
    assert next(iter(found["overall"])) == "received_to_scored"
    hop = "received_to_scored"
    assert found["overall"][hop] == {
        "count": 3, "p50": 3.0, "p90": 7.0, "p99": 7.0}
    assert {team: value[hop]["p50"] for team, value in found["by_team"].items()} == {
        north_team: 1.5, south_team: 3.0}
    assert {rep: value[hop]["count"] for rep, value in found["by_rep"].items()} == {
        north: 1, south: 2}
    assert {source: value[hop]["p99"] for source, value in found["by_source"].items()} == {
        "partner": 7.0, "web": 3.0}


@pytest.mark.parametrize("one_by_one", [False, True], ids=["batch", "one-by-one"])
async def test_an_older_scorer_s_event_without_received_at_still_routes(
    router: Router, one_by_one: bool
) -> None:
    await router.add_person("Ann")
    event = scored("old-lead", clock=router.clock)
    payload = json.loads(event.model_dump_json())
    del payload["data"]["received_at"]  # exactly what an older scorer sends
    router.clock.advance(2)
    record = ConsumerRecord(
        topic=SCORES_TOPIC, partition=0, offset=0, timestamp=0, timestamp_type=0,
        key=b"old-lead", value=json.dumps(payload).encode(), checksum=None,
        serialized_key_size=8, serialized_value_size=0, headers=[],
    )
    consumer = router.consumer(one_by_one=one_by_one)
    await consumer.apply({TopicPartition(SCORES_TOPIC, 0): [record]})

    assert (consumer.applied, consumer.dead_lettered) == (1, 0)
    [offer] = await router.assignments("old-lead")
    assert (offer["status"], offer["received_at"]) == ("offered", None)
    found = await report(router)
    assert found["overall"]["received_to_scored"]["count"] == 0
    assert found["overall"]["scored_to_assigned"] == {
        "count": 1, "p50": 2.0, "p90": 2.0, "p99": 2.0}


@pytest.mark.parametrize("one_by_one", [False, True], ids=["batch", "one-by-one"])
async def test_a_later_score_without_received_at_keeps_the_lead_s_reception(
    router: Router, one_by_one: bool
) -> None:
    await router.add_person("Ann")
    cold = received_before(router, "cooling", 4)
    cold = cold.model_copy(update={"data": cold.data.model_copy(update={"temperature": "cold"})})
    router.clock.advance(10)
    hot = scored("cooling", clock=router.clock)  # an older scorer: no received_at
    for event in (cold, hot):  # the second updates the stored lead
        await router.consume(event, consumer=router.consumer(one_by_one=one_by_one))

    [stored] = [row for row in await router.rows(lead_table) if row["id"] == "cooling"]
    [offer] = await router.assignments("cooling")
    assert stored["received_at"] == offer["received_at"] == cold.data.received_at
    # From the reception to the score that had the lead routed: 4 s + 10 s.
    assert (await report(router))["overall"]["received_to_scored"]["p50"] == 14.0


@pytest.mark.parametrize("one_by_one", [False, True], ids=["batch", "one-by-one"])
async def test_a_stored_lead_without_a_reception_takes_the_one_a_later_score_gives(
    router: Router, one_by_one: bool
) -> None:
    old = scored("upgraded", "cold", clock=router.clock)
    router.clock.advance(5)
    new = received_before(router, "upgraded", 6)
    new = new.model_copy(update={"data": new.data.model_copy(update={"temperature": "cold"})})
    for event in (old, new):
        await router.consume(event, consumer=router.consumer(one_by_one=one_by_one))

    [stored] = [row for row in await router.rows(lead_table) if row["id"] == "upgraded"]
    assert stored["received_at"] == new.data.received_at
