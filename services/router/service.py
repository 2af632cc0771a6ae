"""router's business logic: route leads by the rules, offer them, and follow each offer.

Functions here take the caller's session and never commit: the HTTP endpoint, the consumer
loop or the timer loop owns the transaction, so an assignment, its notifications and its
events commit together or not at all. Every function that hands out leads first takes the
routing lock with the transaction's roster state (`roster_cache.routing_state`, which calls
`repository.lock_routing`), so decisions that read the roster never interleave.
Every state change is a conditional update from the state it expects: of two racing
changes (an acceptance and the deadline, two reps claiming from the queue) exactly one wins.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.router import repository, roster
from services.router.action_links import LINK_PURPOSE, link_expiry, link_token
from services.router.channels import (
    CHANNEL_SECRET_KEYS,
    ChannelKeeper,
    channel_secrets,
    slack_reference,
    stored,
)
from services.router.models import INBOX
from services.router.notifications import DeliverySignal, notification_lease, slack_offer
from services.router.roster_cache import RosterCache, RoutingState, current_state, routing_state
from services.router.routing import (
    Decision,
    LeadFacts,
    Rep,
    Role,
    choose_rep,
    working_deadline,
)
from services.router.rules import DEFAULT_RULE, Rule, RuleSet, first_match
from services.router.schemas import OfferedLead, OfferNotice
from services.router.settings import RouterSettings
from shared.clock import Clock
from shared.db import new_id
from shared.encryption import SecretBox
from shared.erasure import WalScrubber, erase_delivery_records
from shared.events import (
    AssignmentAccepted,
    AssignmentAcceptedData,
    AssignmentContacted,
    AssignmentContactedData,
    AssignmentDisqualified,
    AssignmentDisqualifiedData,
    AssignmentOffered,
    AssignmentOfferedData,
    AssignmentQualified,
    AssignmentQualifiedData,
    AssignmentRejected,
    AssignmentRejectedData,
    Bant,
    LeadNurture,
    LeadNurtureData,
    LeadScored,
)
from shared.lead_keys import KeyRing
from shared.metrics import ServiceMetrics, count_after_commit
from shared.outbound import DestinationPolicy
from shared.outbox import Outbox
from shared.problems import ProblemError
from shared.tracing import traceparent_for

PRODUCER = "router"
ROUTED_TEMPERATURES = frozenset({"hot", "warm"})


class RouterMetrics:
    """router's own Prometheus metrics (labels never carry personal data)."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self.assignments = metrics.counter(
            "router_assignments_total", "Leads offered to a rep", ["role", "strategy"])
        self.escalations = metrics.counter(
            "router_escalations_total", "Offers escalated", ["reason"])
        self.sla_breaches = metrics.counter(
            "router_sla_breaches_total", "SLA deadlines missed", ["deadline"])
        self.delivery_failures = metrics.counter(
            "router_delivery_failures_total", "Notifications given up or refused", ["channel"])
        self.decision_seconds = metrics.histogram(
            "router_decision_seconds", "Time to take one routing decision", [],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1))


@dataclass(frozen=True)
class RouterContext:
    """What routing needs besides a session: where events go, the time, the settings."""

    outbox: Outbox
    clock: Clock
    settings: RouterSettings
    deliveries: DeliverySignal
    metrics: RouterMetrics
    secrets: SecretBox
    """Encrypts and decrypts the roster's webhook secrets and Slack URLs."""
    destinations: DestinationPolicy
    """Which webhook URLs may be registered and called (SSRF guard)."""
    rule_cache: dict[int, RuleSet] = field(default_factory=dict)
    """Parsed rule sets by version (versions are immutable)."""
    roster_cache: RosterCache = field(default_factory=RosterCache)
    """The roster as this process last saw it (see `services.router.roster_cache`)."""
    keyring: KeyRing | None = None
    """The leads' data keys (dropped at their erasure)."""
    scrubber: WalScrubber | None = None
    """Empties SQLite's write-ahead log after an erasure."""

    @classmethod
    def build(
        cls, settings: RouterSettings, outbox: Outbox, clock: Clock,
        metrics: ServiceMetrics | None = None, *, secrets: SecretBox | None = None,
        destinations: DestinationPolicy | None = None, keyring: KeyRing | None = None,
        scrubber: WalScrubber | None = None,
    ) -> RouterContext:
        """The context of `settings`; `EncryptionKeyError` when they hold no encryption key."""
        return cls(
            outbox=outbox, clock=clock, settings=settings, deliveries=DeliverySignal(),
            metrics=RouterMetrics(metrics or ServiceMetrics("router")),
            secrets=secrets or SecretBox.from_setting(settings.encryption_keys),
            destinations=destinations or DestinationPolicy(settings.allowed_webhook_urls),
            keyring=keyring, scrubber=scrubber,
        )

    @property
    def public_base_url(self) -> str:
        return self.settings.public_base_url

    @property
    def channels(self) -> ChannelKeeper:
        return ChannelKeeper(self.secrets, self.destinations)

    @property
    def action_keys(self) -> list[bytes]:
        """Keys of the action links, newest first (derived from the encryption keys)."""
        return self.secrets.signing_keys(LINK_PURPOSE)

    def action_url(self, assignment_id: str, deadline_at: datetime, action: str = "accept") -> str:
        """A link for `action` on the assignment, working until its deadline and the grace."""
        expires_at = link_expiry(deadline_at, self.settings.action_link_grace_seconds)
        token = link_token(self.action_keys, assignment_id, action, expires_at)
        return f"{self.public_base_url}/v1/assignments/{assignment_id}/{action}?token={token}"

    def sla(self, temperature: str, role: str, rule: Rule | None) -> tuple[timedelta, timedelta]:
        """(time to accept, time to first contact) for a lead."""
        settings = self.settings
        if role == "ae":
            accept, contact = settings.sla_ae_accept_seconds, settings.sla_ae_contact_seconds
        elif rule is not None and rule.sla is not None:
            accept, contact = rule.sla.accept_seconds, rule.sla.contact_seconds
        elif temperature == "hot":
            accept, contact = settings.sla_hot_accept_seconds, settings.sla_hot_contact_seconds
        else:
            accept, contact = settings.sla_warm_accept_seconds, settings.sla_warm_contact_seconds
        if settings.sla_accept_seconds is not None and role == "sdr":
            accept = settings.sla_accept_seconds
        return timedelta(seconds=accept), timedelta(seconds=contact)


@dataclass(frozen=True)
class Offer:
    """An assignment just offered to a rep."""

    assignment_id: str
    lead_id: str
    sdr_id: str
    attempt: int
    deadline_at: datetime


@dataclass
class Routing:
    """The outcome of routing one lead: the offer made (or None) and why."""

    offer: Offer | None
    rule: Rule
    rules_version: str
    pools: list[dict[str, Any]] = field(default_factory=list)
    team_id: str | None = None
    people: dict[str, RowMapping] = field(default_factory=dict)
    """The roster rows read to decide, by id (so offering needs no second read)."""
    rep: Rep | None = None
    """The chosen rep as routing saw them: with their team's hours when they have none."""
    earlier_attempts: list[dict[str, Any]] = field(default_factory=list)
    """Earlier tries that found nobody eligible (a hand-over that waited for an AE)."""

    @property
    def decision(self) -> dict[str, Any]:
        found = {
            "rule_id": self.rule.id, "rules_version": self.rules_version, "pools": self.pools,
            "chosen": self.offer.sdr_id if self.offer else None,
        }
        if self.earlier_attempts:
            found["earlier_attempts"] = self.earlier_attempts
        return found


@dataclass
class RosterSnapshot:
    """What a transaction that routes many leads (the timer's batches) passes to `decide`.

    The transaction's `RoutingState` (see `services.router.roster_cache`) holds the roster and
    keeps it current as leads are handed out (`offer_lead` records each offer); this only
    remembers releases made before the first decision took the state.
    """

    state: RoutingState | None = None
    pending: list[tuple[str, datetime | None]] = field(default_factory=list)

    def bind(self, state: RoutingState) -> None:
        if self.state is None:
            self.state = state
            for rep_id, paused_until in self.pending:
                state.released(rep_id, paused_until)
            self.pending.clear()

    def assigned(self, rep_id: str, now: datetime) -> None:
        """Nothing to do: `offer_lead` told the routing state."""

    def released(self, rep_id: str, paused_until: datetime | None = None) -> None:
        if self.state is not None:
            self.state.released(rep_id, paused_until)
        else:
            self.pending.append((rep_id, paused_until))


def lead_facts(row: RowMapping, rule_set: RuleSet | None = None) -> LeadFacts:
    """What rules and eligibility look at; the segment comes from the lead's own `segment`
    field, else from `rule_set`'s employee-count bands."""
    profile: dict[str, Any] = row["profile"] or {}
    segment = profile.get("segment")
    if not isinstance(segment, str) or not segment:
        segment = (rule_set or RuleSet(rules=[])).segment_of(profile.get("employee_count"))
    return LeadFacts(
        id=row["id"],
        temperature=row["temperature"],
        score=row["score"],
        stage=profile.get("stage") or "lead",
        country=profile.get("country"),
        language=profile.get("language"),
        source=profile.get("source"),
        employee_count=profile.get("employee_count"),
        account_key=profile.get("account_key"),
        segment=segment.lower() if segment else None,
        fields=profile,
    )


# Routing


async def route_scored_lead(
    session: AsyncSession, context: RouterContext, event: LeadScored
) -> Offer | None:
    """Record a lead's latest score; route it when hot or warm, nurture it when cold.

    A lead that already has an active assignment keeps it (its score is still recorded). A hot
    or warm lead that finds no eligible rep is kept `waiting`; the timer loop routes it as soon
    as someone is. A score older than the one recorded changes nothing.
    """
    await routing_state(session, context.roster_cache)
    now = context.clock.now()  # after the lock: round robin order follows decision order
    current = await repository.find_lead(session, event.lead_id, for_update=True)
    if current is not None and (
        current["scored_at"] > event.occurred_at or current["status"] == "erased"
    ):
        return None  # an older score, or an erased lead's: nothing of it is kept
    active = current is not None and (
        current["status"] in HELD_STATUSES
        or await repository.active_assignment(session, event.lead_id) is not None
    )
    values, nurture = scored_values(event, current, active, now)
    if current is None:
        lead: Any = {"id": event.lead_id, "queue_team_id": None, "queued_at": None, **values}
        await repository.insert_lead(session, lead)
    else:
        await repository.update_lead(session, event.lead_id, values)
        lead = {**current, **values}
    if nurture:
        await send_to_nurture(session, context, lead, "cold", now)
    if values.get("status") != "waiting":
        return None
    routing = await route_lead(session, context, lead, now, correlation_id=event.correlation_id,
                               first=current is None)
    return routing.offer


HELD_STATUSES = frozenset({"queued", "qualified", "disqualified", "erased"})
"""Lead statuses a new score does not route from (nor send to nurture)."""


def scored_values(
    event: LeadScored, current: RowMapping | None, active: bool, now: datetime
) -> tuple[dict[str, Any], bool]:
    """What a score changes on the lead's row, and whether the lead goes to nurture.

    `active`: the lead is held (queue, qualified, disqualified) or has an active assignment:
    its score is recorded, nothing else.
    """
    profile = event.data.lead.model_dump(mode="json")
    profile["stage"] = event.data.stage
    profile["why"] = [line.reason for line in event.data.breakdown[:5]]
    values: dict[str, Any] = {
        "profile": profile,
        "score": event.data.score,
        "temperature": event.data.temperature,
        "scored_at": event.occurred_at,
        "updated_at": now,
        "source": (event.data.lead.source or "")[:100] or None,
        # An older scorer's event does not say: keep what an earlier score said.
        "received_at": event.data.received_at
        or (current["received_at"] if current is not None else None),
    }
    nurture = False
    if not active:
        if event.data.temperature in ROUTED_TEMPERATURES:
            already_waiting = current["waiting_since"] if current is not None else None
            values.update(status="waiting", waiting_since=already_waiting or now)
        else:
            nurture = (current["status"] if current is not None else None) != "cold"
            values.update(status="cold", waiting_since=None)
    return values, nurture


async def route_scored_leads(
    session: AsyncSession, context: RouterContext, events: Sequence[LeadScored]
) -> list[Offer]:
    """`route_scored_lead` for a batch, with the same outcome as applying the events one by
    one in order, in a handful of statements: the leads, their active assignments and
    attempts are read once; decisions run on the transaction's routing state; the leads,
    assignments, marks, notifications and events are written at the end, one statement each.
    """
    if not events:
        return []
    state = await routing_state(session, context.roster_cache)
    lead_ids = sorted({event.lead_id for event in events})
    stored = await repository.find_leads(session, lead_ids, for_update=True)
    active = await repository.leads_with_active_assignment(session, list(stored))
    attempts = await repository.last_attempts(session, list(stored))
    leads: dict[str, dict[str, Any]] = {lead_id: dict(row) for lead_id, row in stored.items()}
    inserted: set[str] = set()
    assignments: list[dict[str, Any]] = []
    notifications: list[dict[str, Any]] = []
    outbox: list[Any] = []
    marks: dict[str, datetime] = {}
    offers: list[Offer] = []
    for event in events:
        now = context.clock.now()
        current = leads.get(event.lead_id)
        if current is not None and (
            current["scored_at"] > event.occurred_at or current["status"] == "erased"
        ):
            continue
        held = current is not None and (
            current["status"] in HELD_STATUSES or event.lead_id in active)
        values, nurture = scored_values(event, current, held, now)  # type: ignore[arg-type]
        if current is None:
            lead: dict[str, Any] = {
                "id": event.lead_id, "queue_team_id": None, "queued_at": None, **values}
            inserted.add(event.lead_id)
        else:
            lead = {**current, **values}
        leads[event.lead_id] = lead
        if nurture:
            nurture_event, delivery = nurture_rows(context, lead, "cold", now)  # type: ignore[arg-type]
            outbox.append(nurture_event)
            if delivery is not None:
                notifications.append(delivery)
        if values.get("status") != "waiting":
            continue
        rep_id, routing = await decide(session, context, lead, now)  # type: ignore[arg-type]
        if rep_id is None:
            continue
        person = routing.people.get(rep_id) or await repository.find_sdr(session, rep_id)
        if person is None:
            raise LookupError(f"no person {rep_id}")
        attempt = attempts.get(event.lead_id, 0) + 1
        attempts[event.lead_id] = attempt
        offer, row, rows, offered = offer_rows(
            context, lead, person, now=now, routing=routing, role="sdr",  # type: ignore[arg-type]
            attempt=attempt, correlation_id=event.correlation_id,
        )
        count_offer(session, context, routing, "sdr")
        state.assigned(rep_id, now, written=False)
        marks[rep_id] = now
        active.add(event.lead_id)
        lead.update(status="routed", waiting_since=None, updated_at=now)
        assignments.append(row)
        notifications.extend(rows)
        outbox.append(offered)
        offers.append(offer)
    await repository.insert_leads(session, [leads[lead_id] for lead_id in sorted(inserted)])
    await repository.update_scored_leads(
        session, [lead for lead_id, lead in leads.items()
                  if lead_id not in inserted and lead is not None and lead_id in stored
                  and lead != dict(stored[lead_id])])
    await repository.insert_assignments(session, assignments)
    state.written()
    await repository.mark_sdrs_assigned(session, marks)
    await queue_notifications(session, context, notifications, now)
    await context.outbox.add(session, *outbox)
    return offers


async def route_waiting_leads(
    session: AsyncSession, context: RouterContext, now: datetime, *, limit: int
) -> list[Offer]:
    """Route leads that found no eligible rep, oldest first, now that someone may be."""
    if not await repository.any_waiting(session):
        return []
    await routing_state(session, context.roster_cache)
    waiting = await repository.claim_waiting_leads(session, limit)
    offers: list[Offer] = []
    for index, lead in enumerate(waiting):
        # One microsecond apart, so round robin sees the batch's offers in order.
        moment = now + timedelta(microseconds=index)
        routing = await route_lead(session, context, lead, moment)
        if routing.offer is not None:
            offers.append(routing.offer)
    return offers


@dataclass(frozen=True)
class Pool:
    """A pool to try: a team (None: everyone of the role) and whether it is a
    follow-the-sun pool, tried only when nobody in the earlier pools is working now."""

    label: str
    team: RowMapping | None
    follow_the_sun: bool = False

    @property
    def team_id(self) -> str | None:
        return None if self.team is None else str(self.team["id"])


async def _pools(
    session: AsyncSession, state: RoutingState, rule: Rule, role: Role
) -> list[Pool]:
    """Each pool to try, in order (teams from the routing state's cache)."""
    if role == "ae":
        names = [rule.handoff_pool] if rule.handoff_pool else []
    else:
        names = [name for name in (rule.pool, rule.fallback_pool) if name]
    sun = rule.follow_the_sun if role != "ae" and rule.outside_hours == "follow_the_sun" else []
    if not names and not sun:
        return [Pool(f"every {role}", None)]
    pools: list[Pool] = []
    for position, name in enumerate([*names, *sun]):
        team = await state.team(session, name)
        if team is not None:
            pools.append(Pool(name, team, follow_the_sun=position >= len(names)))
    return pools


async def decide(
    session: AsyncSession,
    context: RouterContext,
    lead: RowMapping,
    now: datetime,
    *,
    role: Role = "sdr",
    exclude: frozenset[str] = frozenset(),
    snapshot: RosterSnapshot | None = None,
) -> tuple[str | None, Routing]:
    """Choose who gets `lead` by the current rules; nothing is written.

    Takes the routing lock if the transaction does not hold it yet; the roster comes from the
    transaction's routing state (cached across transactions, see `roster_cache`).
    """
    state = await routing_state(session, context.roster_cache)
    if snapshot is not None:
        snapshot.bind(state)
    version, rule_set = await state.rules(session, context.rule_cache)
    facts = lead_facts(lead, rule_set)
    rule = first_match(rule_set.rules, facts) if rule_set.rules else DEFAULT_RULE
    routing = Routing(offer=None, rule=rule, rules_version=version, people=state.static.rows)
    owner = None
    if rule.strategy == "account_owner" and facts.account_key:
        owner = await repository.find_account_owner(session, facts.account_key)
    window_start = now - timedelta(hours=context.settings.fairness_window_hours)
    someone_working = False
    for pool in await _pools(session, state, rule, role):
        label, team_id = pool.label, pool.team_id
        team_hours = roster.team_hours(pool.team)
        if pool.follow_the_sun and (someone_working or not team_hours.open_at(now)):
            routing.pools.append({"pool": label, "team_id": team_id, "skipped": (
                "an earlier pool is working now" if someone_working else "team closed now"),
                "team_opens_at": _iso(team_hours.next_opening(now))})
            continue
        started = _perf()
        reps = await state.pool(session, team_id, role, with_load=False, hours=team_hours)
        if rule.strategy == "least_loaded" or any(rep.capacity is not None for rep in reps):
            reps = await state.pool(session, team_id, role, with_load=True, hours=team_hours)
        counts: dict[str, int] = {}
        if rule.strategy == "weighted_fairness":
            counts = await state.counts(session, team_id, role, reps, window_start)
        decision: Decision = choose_rep(
            reps, facts, rule.strategy, now, exclude=exclude, counts=counts,
            window_start=window_start, account_owner_id=owner, role=role,
        )
        context.metrics.decision_seconds.observe(_perf() - started)
        tried = {"pool": label, "team_id": team_id, **decision.as_json()}
        if not team_hours.open_at(now):
            tried["team_opens_at"] = _iso(team_hours.next_opening(now))
        routing.pools.append(tried)
        someone_working = someone_working or any(
            "out_of_hours" not in decision.excluded.get(rep.id, ()) for rep in reps)
        if decision.rep_id is not None:
            routing.team_id = team_id
            routing.rep = next(rep for rep in reps if rep.id == decision.rep_id)
            return decision.rep_id, routing
    return None, routing


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _perf() -> float:
    return time.perf_counter()


async def route_lead(
    session: AsyncSession,
    context: RouterContext,
    lead: RowMapping,
    now: datetime,
    *,
    role: Role = "sdr",
    exclude: frozenset[str] = frozenset(),
    correlation_id: str | None = None,
    assignment_id: str | None = None,
    first: bool = False,
    snapshot: RosterSnapshot | None = None,
) -> Routing:
    """Decide and, when someone is eligible, offer. With nobody, the lead is left `waiting`.
    An erased lead is never offered.

    `first`: the caller knows the lead was never offered (saves a query)."""
    if lead["status"] == "erased":
        return Routing(None, DEFAULT_RULE, "")
    rep_id, routing = await decide(session, context, lead, now, role=role, exclude=exclude,
                                   snapshot=snapshot)
    if rep_id is None:
        if role == "sdr":
            await repository.update_lead(session, lead["id"], {
                "status": "waiting", "waiting_since": lead["waiting_since"] or now,
                "updated_at": now,
            })
        return routing
    routing.offer = await offer_lead(
        session, context, lead, rep_id, now=now, routing=routing, role=role,
        correlation_id=correlation_id, assignment_id=assignment_id, first=first,
    )
    return routing


async def offer_lead(
    session: AsyncSession,
    context: RouterContext,
    lead: RowMapping,
    sdr_id: str,
    *,
    now: datetime,
    routing: Routing,
    role: Role = "sdr",
    assignment_id: str | None = None,
    correlation_id: str | None = None,
    status: str = "offered",
    first: bool = False,
) -> Offer:
    """Offer `lead` to a rep: the assignment, its notifications and `assignment.offered`."""
    person = routing.people.get(sdr_id) or await repository.find_sdr(session, sdr_id)
    if person is None:
        raise LookupError(f"no person {sdr_id}")
    attempt = 1 if first else await repository.last_attempt(session, lead["id"]) + 1
    offer, row, notifications, event = offer_rows(
        context, lead, person, now=now, routing=routing, role=role, attempt=attempt,
        assignment_id=assignment_id, correlation_id=correlation_id, status=status,
    )
    count_offer(session, context, routing, role)
    await repository.insert_assignment(session, row)
    await repository.mark_sdr_assigned(session, sdr_id, now)
    state = current_state(session)
    if state is not None:
        state.assigned(sdr_id, now)
    await repository.update_lead(
        session, offer.lead_id, {"status": "routed", "waiting_since": None, "updated_at": now}
    )
    await queue_notifications(session, context, notifications, now)
    await context.outbox.add(session, event)
    return offer


def count_offer(
    session: AsyncSession, context: RouterContext, routing: Routing, role: Role
) -> None:
    """Count an assignment offered, once the transaction offering it commits."""
    count_after_commit(
        session, context.metrics.assignments.labels(role=role, strategy=routing.rule.strategy)
    )


def offer_rows(
    context: RouterContext,
    lead: RowMapping,
    person: RowMapping,
    *,
    now: datetime,
    routing: Routing,
    role: Role,
    attempt: int,
    assignment_id: str | None = None,
    correlation_id: str | None = None,
    status: str = "offered",
) -> tuple[Offer, dict[str, Any], list[dict[str, Any]], AssignmentOffered]:
    """What offering `lead` to `person` writes: the assignment row, its notification rows and
    `assignment.offered` (`count_offer` counts it)."""
    sdr_id: str = person["id"]
    accept_within, contact_within = context.sla(lead["temperature"], role, routing.rule)
    deadline = now + accept_within
    if routing.rule.outside_hours == "hold":
        chosen = routing.rep if routing.rep is not None and routing.rep.id == sdr_id else None
        deadline = working_deadline(
            chosen.working_hours if chosen else roster.shifts(person["working_hours"]),
            chosen.timezone if chosen else person["timezone"], now, accept_within,
        )
    offer = Offer(
        assignment_id=assignment_id or new_id(),
        lead_id=lead["id"],
        sdr_id=sdr_id,
        attempt=attempt,
        deadline_at=deadline,
    )
    profile: dict[str, Any] = lead["profile"] or {}
    snapshot = {
        "name": profile.get("name"), "company": profile.get("company"),
        "email": profile.get("email"), "phone": profile.get("phone"),
        "country": profile.get("country"), "source": profile.get("source"),
        "score": lead["score"], "temperature": lead["temperature"],
    }
    fraction = context.settings.sla_reminder_fraction
    accepted = status == "accepted"
    row = {
        "id": offer.assignment_id,
        "lead_id": offer.lead_id,
        "sdr_id": sdr_id,
        "status": status,
        "attempt": offer.attempt,
        "offered_at": now,
        "deadline_at": offer.deadline_at,
        "accepted_at": now if accepted else None,
        "contact_deadline_at": now + contact_within if accepted else None,
        "reminder_at": (
            now + (offer.deadline_at - now) * fraction if fraction and not accepted else None
        ),
        "lead_snapshot": snapshot,
        "role": role,
        "team_id": routing.team_id,
        "rule_id": routing.rule.id,
        "rules_version": routing.rules_version,
        "decision": routing.decision | {"chosen": sdr_id},
        "scored_at": lead["scored_at"],
        "source": lead["source"],
        "received_at": lead["received_at"],
    }
    notifications = [] if accepted else notification_rows(
        context, person, lead, offer, kind="offer", now=now, role=role)
    event = AssignmentOffered(
        producer=PRODUCER, lead_id=offer.lead_id, correlation_id=correlation_id, occurred_at=now,
        data=AssignmentOfferedData(
            assignment_id=offer.assignment_id, sdr_id=sdr_id, deadline_at=offer.deadline_at,
            attempt=offer.attempt, team_id=routing.team_id, role=role, rule_id=routing.rule.id,
            rules_version=routing.rules_version,
        ),
    )
    return offer, row, notifications, event


async def notify_person(
    session: AsyncSession,
    context: RouterContext,
    person: RowMapping,
    lead: RowMapping,
    offer: Offer,
    *,
    kind: str,
    now: datetime,
    role: str = "sdr",
    deliver_at: datetime | None = None,
) -> None:
    """Queue the offer (or a reminder, or an escalation notice) on each of the person's
    channels: the generic signed webhook and Slack; sent from `deliver_at` (default: now)."""
    rows = notification_rows(context, person, lead, offer, kind=kind, now=now, role=role,
                             deliver_at=deliver_at)
    await queue_notifications(session, context, rows, now)


def notification_rows(
    context: RouterContext,
    person: RowMapping,
    lead: RowMapping,
    offer: Offer,
    *,
    kind: str,
    now: datetime,
    role: str = "sdr",
    deliver_at: datetime | None = None,
) -> list[dict[str, Any]]:
    """The delivery rows of one notice to `person`, one per channel they have."""
    if not person["webhook_url"] and not person["slack_webhook_url"]:
        return []
    profile: dict[str, Any] = lead["profile"] or {}
    notice = OfferNotice(
        type="assignment.offered" if kind == "offer" else f"assignment.{kind}",
        kind=kind,
        timestamp=now,
        assignment_id=offer.assignment_id,
        lead_id=offer.lead_id,
        sdr_id=offer.sdr_id,
        role=role,
        attempt=offer.attempt,
        lead=OfferedLead.model_validate(profile),
        score=lead["score"],
        temperature=lead["temperature"],
        why=list(profile.get("why") or []),
        deadline_at=offer.deadline_at,
        accept_url=context.action_url(offer.assignment_id, offer.deadline_at),
    )
    channels: list[tuple[str, str, dict[str, Any]]] = []
    if person["webhook_url"]:
        channels.append(("generic", person["webhook_url"], notice.model_dump(mode="json")))
    if person["slack_webhook_url"]:
        slack_url = context.secrets.decrypt(person["slack_webhook_url"])
        channels.append(("slack", slack_reference(slack_url), slack_offer(notice, now)))
    return [
        {
            "assignment_id": offer.assignment_id,
            "sdr_id": person["id"],
            "url": url,
            "payload": payload,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": max(now, deliver_at or now),
            "created_at": now,
            "channel": channel,
            "kind": kind,
            "message_id": f"msg_{uuid.uuid4().hex}",
            "traceparent": traceparent_for(offer.lead_id),
            # Not stored: what the delivery loop needs to send rows it is given at commit.
            **channel_secrets(person),
        }
        for channel, url, payload in channels
    ]


async def send_to_nurture(
    session: AsyncSession, context: RouterContext, lead: RowMapping, reason: str, now: datetime
) -> None:
    """Hand a lead back to marketing: `lead.nurture`, and the marketing tool's webhook."""
    event, delivery = nurture_rows(context, lead, reason, now)
    await context.outbox.add(session, event)
    if delivery is not None:
        await queue_notifications(session, context, [delivery], now)


async def queue_notifications(
    session: AsyncSession, context: RouterContext, rows: list[dict[str, Any]], now: datetime
) -> None:
    """Insert notification rows; the loop gets them when the transaction commits.

    Rows due now are inserted leased to this process and given to its loop, which sends them
    without claiming them first; rows due later (and all rows when no loop runs here) wait in
    the database for a loop to claim them."""
    if not rows:
        return
    if not context.deliveries.loop_running:
        due: list[dict[str, Any]] = []
        later = rows
    else:
        due = [row for row in rows if row["next_attempt_at"] <= now]
        later = [row for row in rows if row["next_attempt_at"] > now]
    if later:
        await repository.insert_notifications(session, [stored(row) for row in later])
        context.deliveries.wake_after_commit(session)
    if due:
        lease_until = now + notification_lease(context.settings)
        claimed = await repository.insert_claimed_notifications(
            session, [{**stored(row), "attempts": 1, "next_attempt_at": lease_until}
                      for row in due])
        for row, given in zip(claimed, due, strict=True):
            row.update({name: given[name] for name in CHANNEL_SECRET_KEYS if name in given})
        disabled = await repository.disabled_among(session, {row["url"] for row in due})
        for row in claimed:
            row["disabled"] = row["url"] in disabled
        context.deliveries.send_after_commit(session, claimed)


def nurture_rows(
    context: RouterContext, lead: RowMapping, reason: str, now: datetime
) -> tuple[LeadNurture, dict[str, Any] | None]:
    """`lead.nurture`, and the marketing tool's delivery row when it has a webhook."""
    event = LeadNurture(
        producer=PRODUCER, lead_id=lead["id"], occurred_at=now,
        data=LeadNurtureData(reason=reason, temperature=lead["temperature"], score=lead["score"]),
    )
    url = context.settings.nurture_webhook_url
    if not url:
        return event, None
    return event, {
        "assignment_id": None, "sdr_id": None, "url": url,
        "payload": {"type": "lead.nurture", "timestamp": now.isoformat(),
                    "data": {"lead_id": lead["id"], "reason": reason,
                             "temperature": lead["temperature"], "score": lead["score"],
                             "email": (lead["profile"] or {}).get("email")}},
        "status": "pending", "attempts": 0, "next_attempt_at": now, "created_at": now,
        "channel": "generic", "kind": "nurture", "message_id": f"msg_{uuid.uuid4().hex}",
        "traceparent": traceparent_for(lead["id"]),
    }


# What reps do with an assignment


def _not_open(existing: RowMapping, action: str, allowed: str) -> ProblemError:
    return ProblemError(
        409, "Assignment not open",
        f"This assignment is {existing['status']}; only an {allowed} assignment can be "
        f"{action}.",
        slug="assignment-not-open", assignment_status=existing["status"],
    )


async def _require(session: AsyncSession, assignment_id: str) -> RowMapping:
    found = await repository.find_assignment(session, assignment_id)
    if found is None:
        raise ProblemError(
            404, "Assignment not found", f"No assignment has the id {assignment_id!r}."
        )
    return found


async def accept_assignment(
    session: AsyncSession, context: RouterContext, assignment_id: str
) -> RowMapping:
    """Stop the accept clock: `offered` -> `accepted`, unless the offer already closed.

    The status check and the change are one conditional update, so an acceptance racing the
    escalation of the same offer either wins or gets a 409, never both.
    """
    now = context.clock.now()
    existing = await _require(session, assignment_id)
    lead = await repository.find_lead(session, existing["lead_id"])
    assert lead is not None
    _, contact_within = context.sla(lead["temperature"], existing["role"], None)
    rule = await _rule_of(session, context, existing)
    if rule is not None:
        _, contact_within = context.sla(lead["temperature"], existing["role"], rule)
    if not await repository.transition(session, assignment_id, from_status="offered", values={
        "status": "accepted", "accepted_at": now, "reminder_at": None,
        "contact_deadline_at": now + contact_within,
    }):
        raise _not_open(await _require(session, assignment_id), "accepted", "offered")
    accepted = await _require(session, assignment_id)
    await repository.cancel_pending_notifications(session, assignment_id)
    account_key = (lead["profile"] or {}).get("account_key")
    if account_key:
        await repository.claim_account(session, account_key, accepted["sdr_id"], now)
    within = now <= accepted["deadline_at"]
    if not within:
        count_after_commit(session, context.metrics.sla_breaches.labels(deadline="accept"))
    await context.outbox.add(session, AssignmentAccepted(
        producer=PRODUCER, lead_id=accepted["lead_id"], occurred_at=now,
        data=AssignmentAcceptedData(assignment_id=assignment_id, sdr_id=accepted["sdr_id"],
                                    accepted_at=now, within_sla=within),
    ))
    return accepted


async def _rule_of(
    session: AsyncSession, context: RouterContext, row: RowMapping
) -> Rule | None:
    version, rule_set, _ = await roster.current_rules(session, context.rule_cache)
    if version != row["rules_version"]:
        return None
    return next((rule for rule in rule_set.rules if rule.id == row["rule_id"]), None)


async def mark_contacted(
    session: AsyncSession, context: RouterContext, assignment_id: str
) -> RowMapping:
    """First touch: `accepted` -> `contacted`."""
    now = context.clock.now()
    if not await repository.transition(session, assignment_id, from_status="accepted",
                                       values={"status": "contacted", "contacted_at": now}):
        raise _not_open(await _require(session, assignment_id), "marked contacted", "accepted")
    row = await _require(session, assignment_id)
    deadline = row["contact_deadline_at"]
    await context.outbox.add(session, AssignmentContacted(
        producer=PRODUCER, lead_id=row["lead_id"], occurred_at=now,
        data=AssignmentContactedData(assignment_id=assignment_id, sdr_id=row["sdr_id"],
                                     contacted_at=now,
                                     within_sla=deadline is None or now <= deadline),
    ))
    return row


async def qualify(
    session: AsyncSession, context: RouterContext, assignment_id: str, bant: Bant
) -> tuple[RowMapping, Offer | None]:
    """SQL: `contacted` (or `accepted`) -> `qualified`, then the lead is routed to an AE."""
    now = context.clock.now()
    existing = await _require(session, assignment_id)
    if existing["role"] != "sdr":
        raise ProblemError(409, "Not an SDR assignment",
                           "Only an SDR's assignment is qualified and handed to an AE.",
                           slug="not-sdr-assignment")
    values = {"status": "qualified", "qualified_at": now, "closed_at": now,
              "bant": bant.model_dump(mode="json")}
    done = await repository.transition(session, assignment_id, from_status="contacted",
                                       values=values)
    if not done:
        done = await repository.transition(session, assignment_id, from_status="accepted",
                                           values=values | {"contacted_at": now})
    if not done:
        raise _not_open(
            await _require(session, assignment_id), "qualified", "accepted or contacted"
        )
    row = await _require(session, assignment_id)
    await context.outbox.add(session, AssignmentQualified(
        producer=PRODUCER, lead_id=row["lead_id"], occurred_at=now,
        data=AssignmentQualifiedData(assignment_id=assignment_id, sdr_id=row["sdr_id"],
                                     qualified_at=now, bant=bant),
    ))
    await routing_state(session, context.roster_cache)
    lead = await repository.find_lead(session, row["lead_id"])
    assert lead is not None
    routing = await route_lead(session, context, lead, now, role="ae")
    if routing.offer is None:
        await wait_for_ae(session, context, lead, row, routing, now)
    return row, routing.offer


HANDOVER_LOG_LIMIT = 50
"""Attempts kept in a hand-over's log: the first one and the latest ones."""


def handover_delay(attempts: int, settings: RouterSettings) -> timedelta:
    """How long a hand-over waits before its next try: doubling from
    `handover_retry_seconds`, never more than `handover_max_retry_seconds`."""
    seconds = settings.handover_retry_seconds * 2 ** min(max(attempts - 1, 0), 32)
    return timedelta(seconds=min(seconds, settings.handover_max_retry_seconds))


def handover_attempt(routing: Routing, now: datetime) -> dict[str, Any]:
    """One entry of a hand-over's log: when it was tried and why nobody was eligible."""
    return {"at": now.isoformat(), "rules_version": routing.rules_version,
            "rule_id": routing.rule.id, "pools": routing.pools}


def append_attempt(log: list[dict[str, Any]], entry: dict[str, Any]) -> list[dict[str, Any]]:
    log = [*log, entry]
    if len(log) > HANDOVER_LOG_LIMIT:
        log = [log[0], *log[-(HANDOVER_LOG_LIMIT - 1):]]
    return log


async def wait_for_ae(
    session: AsyncSession, context: RouterContext, lead: RowMapping, qualified: RowMapping,
    routing: Routing, now: datetime,
) -> None:
    """No AE is eligible for a qualified lead: the hand-over is kept, for the timer loop to
    try again with a growing delay, and the manager is told once that it waits."""
    await repository.update_lead(session, lead["id"], {"status": "qualified",
                                                       "waiting_since": now, "updated_at": now})
    team_ids = [pool["team_id"] for pool in routing.pools if pool.get("team_id")]
    team_ids.append(qualified["team_id"])
    notified_at = None
    for team_id in team_ids:
        team = await repository.find_team(session, team_id) if team_id else None
        manager = (await repository.find_sdr(session, team["manager_id"])
                   if team is not None and team["manager_id"] else None)
        if manager is not None:
            await notify_person(session, context, manager, lead, Offer(
                qualified["id"], lead["id"], qualified["sdr_id"], qualified["attempt"],
                now + handover_delay(1, context.settings),
            ), kind="handover_waiting", now=now, role="ae")
            notified_at = now
            break
    await repository.insert_handover(session, {
        "id": new_id(), "lead_id": lead["id"], "from_assignment_id": qualified["id"],
        "status": "waiting", "requested_at": now, "attempts": 1, "last_attempt_at": now,
        "next_attempt_at": now + handover_delay(1, context.settings),
        "manager_notified_at": notified_at, "attempt_log": [handover_attempt(routing, now)],
    })


async def reject(
    session: AsyncSession, context: RouterContext, assignment_id: str, reason_code: str,
    note: str | None,
) -> tuple[RowMapping, Offer | None]:
    """The rep turns the lead down: it is offered at once to the next rep (never them)."""
    now = context.clock.now()
    if not await repository.transition(session, assignment_id, from_status="offered", values={
        "status": "rejected", "closed_at": now, "reason_code": reason_code, "note": note,
        "reminder_at": None,
    }):
        raise _not_open(await _require(session, assignment_id), "rejected", "offered")
    row = await _require(session, assignment_id)
    await repository.cancel_pending_notifications(session, assignment_id)
    await context.outbox.add(session, AssignmentRejected(
        producer=PRODUCER, lead_id=row["lead_id"], occurred_at=now,
        data=AssignmentRejectedData(assignment_id=assignment_id, sdr_id=row["sdr_id"],
                                    reason_code=reason_code, note=note),
    ))
    await routing_state(session, context.roster_cache)
    lead = await repository.find_lead(session, row["lead_id"])
    assert lead is not None
    if lead["status"] == "erased":
        return row, None
    exclude = frozenset(await repository.sdrs_who_had(session, lead["id"]))
    routing = await route_lead(session, context, lead, now, role=row["role"], exclude=exclude)
    if routing.offer is None and row["role"] == "ae":
        await wait_for_ae(session, context, lead, row, routing, now)
    return row, routing.offer


async def disqualify(
    session: AsyncSession, context: RouterContext, assignment_id: str, reason_code: str,
    note: str | None,
) -> RowMapping:
    """Not a fit: the assignment closes and the lead is recycled to nurturing."""
    now = context.clock.now()
    values = {"status": "disqualified", "closed_at": now, "reason_code": reason_code,
              "note": note, "reminder_at": None}
    for status in ("accepted", "contacted"):
        if await repository.transition(session, assignment_id, from_status=status, values=values):
            break
    else:
        raise _not_open(await _require(session, assignment_id), "disqualified",
                        "accepted or contacted")
    row = await _require(session, assignment_id)
    await context.outbox.add(session, AssignmentDisqualified(
        producer=PRODUCER, lead_id=row["lead_id"], occurred_at=now,
        data=AssignmentDisqualifiedData(assignment_id=assignment_id, sdr_id=row["sdr_id"],
                                        reason_code=reason_code, note=note),
    ))
    await repository.update_lead(session, row["lead_id"], {"status": "disqualified",
                                                           "waiting_since": None,
                                                           "updated_at": now})
    lead = await repository.find_lead(session, row["lead_id"])
    assert lead is not None
    await send_to_nurture(session, context, lead, f"disqualified:{reason_code}", now)
    return row


async def claim_from_queue(
    session: AsyncSession, context: RouterContext, lead_id: str, person_id: str,
    team_ids: frozenset[str],
) -> RowMapping:
    """The first rep to claim a lead from their team's shared queue gets it, accepted."""
    now = context.clock.now()
    await routing_state(session, context.roster_cache)
    lead = await repository.find_lead(session, lead_id)
    if lead is None or lead["queue_team_id"] not in team_ids:
        raise ProblemError(404, "Lead not in your queue",
                           f"No lead {lead_id!r} waits in a queue of your teams.")
    if not await repository.take_from_queue(session, lead_id, now):
        raise ProblemError(409, "Already claimed", "Another rep claimed this lead first.",
                           slug="already-claimed")
    version, _, _ = await roster.current_rules(session, context.rule_cache)
    routing = Routing(offer=None, rule=Rule(id="shared-queue"), rules_version=version,
                      team_id=lead["queue_team_id"],
                      pools=[{"pool": "shared queue", "team_id": lead["queue_team_id"],
                              "candidates": [person_id], "excluded": {}, "scores": {},
                              "tie_break": "first to claim", "strategy": "claim",
                              "rep_id": person_id, "note": ""}])
    offer = await offer_lead(session, context, lead, person_id, now=now, routing=routing,
                             status="accepted")
    row = await _require(session, offer.assignment_id)
    await context.outbox.add(session, AssignmentAccepted(
        producer=PRODUCER, lead_id=lead_id, occurred_at=now,
        data=AssignmentAcceptedData(assignment_id=offer.assignment_id, sdr_id=person_id,
                                    accepted_at=now, within_sla=False),
    ))
    return row


async def erase_lead(session: AsyncSession, context: RouterContext, lead_id: str) -> None:
    """Right to erasure: the lead's personal data leaves router's tables, its open assignment
    is closed and it is never offered again; its published events and dead letters go."""
    await repository.erase_lead(session, lead_id, context.clock.now())
    await erase_delivery_records(session, lead_id, outbox=context.outbox.tables, inbox=INBOX)
    if context.keyring is not None:
        context.keyring.forget(lead_id)
    if context.scrubber is not None:
        context.scrubber.after_commit(session)
