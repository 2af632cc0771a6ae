"""router's routing: record each score, choose a rep by the rules and offer the lead.

Offers and their notifications are written by `services.router.offers`, what reps do with
an assignment by `services.router.assignment_actions`; the context and the outcome types
are in `services.router.context` (re-exported here, where callers long found them).

Functions here take the caller's session and never commit: the HTTP endpoint, the consumer
loop or the timer loop owns the transaction, so an assignment, its notifications and its
events commit together or not at all. Every function that hands out leads first takes the
routing lock with the transaction's roster state (`roster_cache.routing_state`, which calls
`repository.lock_routing`), so decisions that read the roster never interleave.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.router import explanations, repository, roster, roster_repository
from services.router.context import PRODUCER as PRODUCER
from services.router.context import Offer as Offer
from services.router.context import RosterSnapshot as RosterSnapshot
from services.router.context import RouterContext as RouterContext
from services.router.context import Routing as Routing
from services.router.offers import (
    count_offer,
    nurture_rows,
    offer_lead,
    offer_rows,
    queue_notifications,
    send_to_nurture,
)
from services.router.roster_cache import RoutingState, routing_state
from services.router.routing import (
    Decision,
    LeadFacts,
    Role,
    choose_rep,
)
from services.router.rules import DEFAULT_RULE, Rule, RuleSet, first_match
from shared.events import (
    LeadScored,
)

ROUTED_TEMPERATURES = frozenset({"hot", "warm"})


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
        held_status(current, event)
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


def held_status(current: Mapping[Any, Any], event: LeadScored) -> bool:
    """Whether the lead's status holds it from routing when `event` comes.

    A lead an SDR disqualified went back to marketing: the scorer recycled it. It is held until
    the scorer makes it MQL again (it re-engaged: a demo request months later, say), which the
    router sees as a score at stage `mql` following one at stage `recycled` (a lead's events
    come in order); then it is routed like a new lead. A score the scorer sent before it
    recycled the lead still says `mql` after an earlier `mql`, and keeps it held."""
    if current["status"] == "disqualified":
        before = (current["profile"] or {}).get("stage")
        return not (before == "recycled" and event.data.stage == "mql")
    return current["status"] in HELD_STATUSES


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
            held_status(current, event) or event.lead_id in active)
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
        person = routing.people.get(rep_id) or await roster_repository.find_sdr(session, rep_id)
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
    await roster_repository.mark_sdrs_assigned(session, marks)
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
        owner = await roster_repository.find_account_owner(session, facts.account_key)
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
        names = {rep.id: str(state.static.rows[rep.id]["name"]) for rep in reps
                 if rep.id in state.static.rows}
        explained = explanations.explain_pool(decision, reps, facts, now, names)
        tried["explained"] = explained
        if not team_hours.open_at(now):
            tried["team_opens_at"] = _iso(team_hours.next_opening(now))
        routing.pools.append(tried)
        someone_working = someone_working or any(
            "out_of_hours" not in decision.excluded.get(rep.id, ()) for rep in reps)
        if decision.rep_id is not None:
            routing.team_id = team_id
            routing.rep = next(rep for rep in reps if rep.id == decision.rep_id)
            routing.summary = explanations.summary(
                decision.rep_id, rule.id, decision.strategy, decision.tie_break,
                explained["figures"].get(decision.rep_id), names)
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
