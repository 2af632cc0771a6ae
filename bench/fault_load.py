"""The load and the checker of `bench/faults.py`, apart from the faults themselves.

The load sends hot leads at a steady rate, some of them twice with the same `Idempotency-Key`,
and retries only what a careful client retries: connection errors and 503. The checker reads
the router's database and the webhook receiver, never the services' code, and says which
acknowledged leads were lost, doubled, stuck or undelivered.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import ssl
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import httpx
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import bindparam, text

from leadrelay.local_system import WebhookReceiver
from shared.db import Database

RETRY_STATUSES = frozenset({503})


@dataclass
class LoadResult:
    accepted: dict[str, float] = field(default_factory=dict)
    """Lead id -> when (`time.monotonic()`) ingest first acknowledged it with a 202."""
    duplicates_sent: int = 0
    duplicates_split: list[tuple[str, str]] = field(default_factory=list)
    """Pairs of lead ids one `Idempotency-Key` was answered with: must stay empty."""
    retries: Counter[str] = field(default_factory=Counter)
    """Why requests were sent again: `HTTP 503`, `ConnectError`..."""
    refused: Counter[str] = field(default_factory=Counter)
    """Answers that are neither 202 nor retryable (a 500 is a defect)."""


async def send_leads(
    ingest_urls: list[str], *, leads: int, rate: float, duplicate_share: float,
    headers: dict[str, str], give_up_after: float = 120.0, seed: int = 7,
) -> LoadResult:
    """Send `leads` hot leads at `rate` per second, round robin over the ingest instances,
    with `headers` (the credential); `duplicate_share` of them are sent a second time with the
    same `Idempotency-Key`."""
    result = LoadResult()
    chooser = random.Random(seed)
    run = uuid.uuid4().hex[:6]
    instances = itertools.cycle(ingest_urls)
    tls = ssl.create_default_context()  # made once: loading the CA file per client costs ms

    async def post(number: int, key: str) -> str | None:
        deadline = time.monotonic() + give_up_after
        delay = 0.1
        while time.monotonic() < deadline:
            url = next(instances)
            try:
                # A connection per attempt, no shared pool: under connect timeouts on a busy
                # machine httpcore's pool stopped lending connections, then spun the event
                # loop in `_assign_requests_to_connections` (the load and the faults stalled).
                async with httpx.AsyncClient(timeout=20.0, headers=headers,
                                             verify=tls) as client:
                    answer = await client.post(
                        f"{url}/v1/leads", headers={"Idempotency-Key": key},
                        json={"email": f"fault{run}.{number}@load.example",
                              "name": f"Fault {number}", "demo_requested": True})
            except httpx.TransportError as error:
                result.retries[type(error).__name__] += 1
            else:
                if answer.status_code == 202:
                    lead_id: str = answer.json()["lead_id"]
                    result.accepted.setdefault(lead_id, time.monotonic())
                    return lead_id
                if answer.status_code not in RETRY_STATUSES:
                    result.refused[f"HTTP {answer.status_code}"] += 1
                    return None
                result.retries[f"HTTP {answer.status_code}"] += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)
        result.refused["gave up"] += 1
        return None

    async def one(number: int) -> None:
        key = f"{run}-{number}"
        first = await post(number, key)
        if chooser.random() < duplicate_share:
            result.duplicates_sent += 1
            second = await post(number, key)
            if first and second and first != second:
                result.duplicates_split.append((first, second))

    started = time.monotonic()
    tasks = []
    for number in range(leads):
        wait = started + number / rate - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(one(number)))
    await asyncio.gather(*tasks)
    return result


@dataclass
class Verdict:
    acknowledged: int
    lost: list[str]
    """Acknowledged, and the router never heard of them."""
    doubled: list[str]
    """More than one active assignment at once."""
    stuck: list[str]
    """Known to the router, yet without any assignment."""
    undelivered: list[str]
    """Assigned, but no offer reached the receiver."""
    redeliveries: int
    """Offers the receiver got more than once (at least once delivery)."""
    webhook_id_changes: list[str]
    """Offers redelivered under another `webhook-id`: must stay empty."""

    @property
    def clean(self) -> bool:
        return not (self.lost or self.doubled or self.stuck or self.undelivered
                    or self.webhook_id_changes)

    def table(self) -> str:
        return "\n".join([
            f"  acknowledged leads      {self.acknowledged}",
            f"  lost                    {len(self.lost)}",
            f"  two active assignments  {len(self.doubled)}",
            f"  stuck (no assignment)   {len(self.stuck)}",
            f"  offer never delivered   {len(self.undelivered)}",
            f"  offers redelivered      {self.redeliveries} "
            f"(under another webhook-id: {len(self.webhook_id_changes)})",
        ])


async def router_view(router_database_url: str) -> tuple[set[str], dict[str, int], set[str]]:
    """(leads the router knows, active assignments per lead, leads with any assignment)."""
    db = Database(router_database_url)
    try:
        async with db.reading() as session:
            known = {row[0] for row in await session.execute(text("SELECT id FROM router_lead"))}
            active = {row[0]: int(row[1]) for row in await session.execute(text(
                "SELECT lead_id, count(*) FROM router_assignment "
                "WHERE status IN ('offered', 'accepted', 'contacted') GROUP BY lead_id"))}
            assigned = {row[0] for row in await session.execute(
                text("SELECT DISTINCT lead_id FROM router_assignment"))}
    finally:
        await db.dispose()
    return known, active, assigned


def offer_deliveries(receiver: WebhookReceiver) -> dict[str, list[tuple[str, str]]]:
    """Lead id -> (assignment id, `webhook-id`) of every offer POST the receiver got."""
    with receiver.lock:
        deliveries = list(receiver.deliveries)
    found: dict[str, list[tuple[str, str]]] = {}
    for webhook_id, body, _ in deliveries:
        if body.get("kind") == "offer":
            found.setdefault(body["lead_id"], []).append((body["assignment_id"], webhook_id))
    return found


async def wait_until_delivered(receiver: WebhookReceiver, accepted: set[str],
                               timeout: float) -> float:
    """Wait until every accepted lead has an offer at the receiver; the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if accepted <= set(offer_deliveries(receiver)):
            break
        await asyncio.sleep(0.25)
    return time.monotonic() - started


async def check(router_database_url: str, receiver: WebhookReceiver,
                accepted: set[str]) -> Verdict:
    known, active, assigned = await router_view(router_database_url)
    offers = offer_deliveries(receiver)
    redeliveries = 0
    changed: list[str] = []
    for lead_id, pairs in offers.items():
        ids_per_assignment: dict[str, set[str]] = {}
        for assignment_id, webhook_id in pairs:
            ids_per_assignment.setdefault(assignment_id, set()).add(webhook_id)
        redeliveries += len(pairs) - len(ids_per_assignment)
        if any(len(ids) > 1 for ids in ids_per_assignment.values()):
            changed.append(lead_id)
    return Verdict(
        acknowledged=len(accepted),
        lost=sorted(accepted - known),
        doubled=sorted(lead for lead, count in active.items() if count > 1),
        stuck=sorted((accepted & known) - assigned),
        undelivered=sorted((accepted & assigned) - set(offers)),
        redeliveries=redeliveries,
        webhook_id_changes=sorted(changed),
    )


@dataclass
class Whereabouts:
    """Where one acknowledged lead without a delivered offer got to, hop by hop."""

    lead_id: str
    in_ingest: bool
    received_published: bool | None
    """`lead.received` in ingest's outbox: published (True), waiting (False), no row (None;
    purged rows count as published)."""
    scorer_applied: bool
    """The scorer's consumer recorded `lead.received` (its processed-event table)."""
    scored: bool
    scored_published: bool | None
    router_applied: bool
    assigned: bool
    dead_letters: list[str]
    """`service: event type` of the lead's messages in a dead-letter table."""
    arrived_late: float | None = None
    """Seconds after the drain's end at which its offer arrived after all; None: never."""

    def last_hop(self) -> str:
        if not self.in_ingest:
            return "not in ingest"
        if self.received_published is False:
            return "ingest outbox: lead.received not published"
        if not self.scorer_applied:
            return "lead.received published, not applied by the scorer"
        if not self.scored:
            return "scorer applied lead.received, no score"
        if self.scored_published is False:
            return "scorer outbox: lead.scored not published"
        if not self.router_applied:
            return "lead.scored published, not applied by the router"
        if not self.assigned:
            return "router applied lead.scored, no assignment"
        return "assigned, offer not delivered"


_WHEREABOUTS_QUERIES: dict[str, tuple[str, str]] = {
    "in_ingest": ("ingest", "SELECT id FROM ingest_lead WHERE id IN :ids"),
    "scored": ("scorer", "SELECT lead_id FROM scorer_lead_score WHERE lead_id IN :ids"),
    "router_known": ("router", "SELECT id FROM router_lead WHERE id IN :ids"),
    "assigned": ("router", "SELECT DISTINCT lead_id FROM router_assignment WHERE lead_id IN :ids"),
}
_HOPS = (("ingest", "lead.received", "scorer"), ("scorer", "lead.scored", "router"))
"""(publishing service, event type, consuming service) of the two hops before the router."""


async def locate(database_urls: dict[str, str], lead_ids: list[str]) -> list[Whereabouts]:
    """Where each of `lead_ids` is, read from each service's tables with plain SQL."""
    if not lead_ids:
        return []
    found: dict[str, set[str]] = {}
    published: dict[str, dict[str, bool]] = {}
    applied: dict[str, set[str]] = {}
    dead: dict[str, list[str]] = {}
    ids = {"ids": lead_ids}

    async def rows(service: str, query: str, **values: object) -> list[tuple[str, ...]]:
        db = Database(database_urls[service])
        try:
            async with db.reading() as session:
                statement = text(query).bindparams(
                    *(bindparam(name, expanding=True) for name in values
                      if isinstance(values[name], list)))
                return [tuple(row) for row in await session.execute(statement, values)]
        finally:
            await db.dispose()

    for name, (service, query) in _WHEREABOUTS_QUERIES.items():
        found[name] = {row[0] for row in await rows(service, query, **ids)}
    for publisher, event_type, consumer in _HOPS:
        events = await rows(publisher, (
            f"SELECT message_key, event_id, published_at IS NOT NULL "
            f"FROM {publisher}_outbox_event WHERE event_type = :type AND message_key IN :ids"),
            type=event_type, **ids)
        published[event_type] = {key: bool(done) for key, _, done in events}
        lead_of_event = {event_id: key for key, event_id, _ in events}
        applied[consumer] = {lead_of_event[row[0]] for row in await rows(
            consumer, f"SELECT event_id FROM {consumer}_processed_event WHERE event_id IN :ids",
            ids=list(lead_of_event) or [""])}
        for key, error in await rows(consumer, (
                f"SELECT message_key, error FROM {consumer}_failed_event "
                f"WHERE message_key IN :ids"), **ids):
            last_line = (error.splitlines() or [""])[-1]
            dead.setdefault(key, []).append(f"{consumer}: {last_line[:120]}")
    return [Whereabouts(
        lead_id=lead_id, in_ingest=lead_id in found["in_ingest"],
        received_published=published["lead.received"].get(lead_id),
        # A purged outbox row loses the event id: the score shows it was applied.
        scorer_applied=lead_id in applied["scorer"] or lead_id in found["scored"],
        scored=lead_id in found["scored"],
        scored_published=published["lead.scored"].get(lead_id),
        router_applied=lead_id in applied["router"] or lead_id in found["router_known"],
        assigned=lead_id in found["assigned"], dead_letters=dead.get(lead_id, []),
    ) for lead_id in lead_ids]


async def wait_for_late(receiver: WebhookReceiver, whereabouts: list[Whereabouts],
                        timeout: float) -> None:
    """Wait up to `timeout` more seconds for the missing offers, noting when each arrives."""
    started = time.monotonic()
    waiting = {place.lead_id: place for place in whereabouts}
    while waiting and time.monotonic() - started < timeout:
        delivered = set(offer_deliveries(receiver))
        for lead_id in list(waiting):
            if lead_id in delivered:
                waiting.pop(lead_id).arrived_late = time.monotonic() - started
        await asyncio.sleep(0.5)


def recovery_seconds(fault_at: float, accepted: dict[str, float],
                     receiver: WebhookReceiver) -> float | None:
    """From a fault to the first offer delivered for a lead acknowledged after it."""
    with receiver.lock:
        deliveries = list(receiver.deliveries)
    after = [arrived for _, body, arrived in deliveries
             if arrived >= fault_at and accepted.get(body.get("lead_id", ""), -1.0) >= fault_at]
    return min(after) - fault_at if after else None


async def consumer_lag(bootstrap_servers: str, groups: list[str]) -> dict[str, dict[str, int]]:
    """Group -> `topic[partition]` -> records between its committed offset and the end, for
    the partitions where some are left (Apache Kafka only: it keeps committed offsets)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers)
    await admin.start()
    await reader.start()
    try:
        lag: dict[str, dict[str, int]] = {}
        for group in groups:
            committed = await admin.list_consumer_group_offsets(group)
            ends = await reader.end_offsets(list(committed))
            lag[group] = {f"{partition.topic}[{partition.partition}]":
                          ends[partition] - offset.offset
                          for partition, offset in sorted(committed.items())
                          if ends[partition] > offset.offset}
        return lag
    finally:
        await reader.stop()
        await admin.close()
