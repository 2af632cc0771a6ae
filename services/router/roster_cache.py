"""The roster as routing sees it, cached per process and kept correct with several instances.

Routing a lead needs the rules, the pools' people and, for each person, a few figures that
change with every assignment. Reading 1,000 people for every decision is what made routing
slow, so each router process keeps a `RosterCache`, and each transaction that routes works
on a `RoutingState` built from it:

- `router_roster_state.generation` is bumped in the same transaction as any change to
  people, teams, memberships or rules (by the repository functions that write them). A
  transaction whose generation differs from the cache's drops everything cached.
- `router_roster_state.routing_seq` is bumped by every transaction that routes, under the
  routing lock (`repository.lock_routing`, one statement that also reads the generation).
  When a transaction gets the sequence number right after the one this process last
  committed, nobody else routed in between, and the cached last-assignment times and pauses
  are current; otherwise they are read again (three narrow columns, not the whole roster).
- Open assignments (capacity, least loaded) and the fairness window's counts are never
  carried across transactions: they are read from the database by the transaction that
  needs them, then kept current in memory as it hands out leads.

The state is adopted by the cache only when its transaction commits; a rollback (even of a
savepoint) leaves the cache as it was, or drops it, so it never holds what the database does
not.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction

from services.router import repository, roster, roster_repository
from services.router.routing import ALWAYS_OPEN, Rep, Role, TeamHours, with_team_hours
from services.router.rules import RuleSet

PoolKey = tuple[str | None, str]
"""(team id or None for everyone of the role, role)."""

_STATE = "router.routing_state"
_LISTENING = "router.routing_state.listening"


@dataclass
class Static:
    """What changes only with the roster generation: shared by the transactions of it."""

    generation: int
    rules: tuple[str, RuleSet] | None = None
    teams: dict[str, RowMapping | None] = field(default_factory=dict)
    """Team rows by name (None: no such team)."""
    pools: dict[PoolKey, tuple[str, ...]] = field(default_factory=dict)
    positions: dict[PoolKey, dict[str, int]] = field(default_factory=dict)
    rows: dict[str, RowMapping] = field(default_factory=dict)
    """People rows by id: channels, schedule, time zone (not their per-assignment figures)."""


@dataclass
class RosterCache:
    """One per router process and database (the `RouterContext` holds it)."""

    static: Static | None = None
    seq: int | None = None
    reps: dict[str, Rep] = field(default_factory=dict)
    """People as of `seq`, with `last_assigned_at` and `paused_until` (open load left 0)."""
    views: dict[PoolKey, list[Rep]] = field(default_factory=dict)
    """Each pool's people as routing sees them (with their team's hours when they have none)."""
    loads: int = 0
    """Full roster reads so far (for tests and the benchmark)."""
    refreshes: int = 0
    """Reads of the per-assignment columns after another instance routed."""

    def invalidate(self) -> None:
        self.static, self.seq, self.reps, self.views = None, None, {}, {}

    def adopt(self, state: RoutingState) -> None:
        """Take a committed transaction's roster (the latest committed wins; every
        transaction checks the counters before trusting it anyway)."""
        if self.seq is not None and state.seq <= self.seq:
            return
        self.static, self.seq, self.reps, self.views = (
            state.static, state.seq, state.reps, state.views)


@dataclass
class RoutingState:
    """The roster as one routing transaction sees it (valid under the routing lock only)."""

    cache: RosterCache
    static: Static
    seq: int
    reps: dict[str, Rep]
    views: dict[PoolKey, list[Rep]] = field(default_factory=dict)
    open_counts: dict[PoolKey, dict[str, int]] = field(default_factory=dict)
    fairness_counts: dict[PoolKey, dict[str, int]] = field(default_factory=dict)
    unwritten: Counter[str] = field(default_factory=Counter)
    """Offers decided in this transaction but not yet inserted (the batch path writes them
    at the end): added to what is read from the database."""
    spoiled: bool = False

    async def rules(self, session: AsyncSession, rule_cache: dict[int, RuleSet]) -> tuple[
        str, RuleSet
    ]:
        if self.static.rules is None:
            version, rule_set, _ = await roster.current_rules(session, rule_cache)
            self.static.rules = (version, rule_set)
        return self.static.rules

    async def team(self, session: AsyncSession, name: str) -> RowMapping | None:
        if name not in self.static.teams:
            self.static.teams[name] = await roster_repository.find_team_by_name(session, name)
        return self.static.teams[name]

    async def pool(
        self, session: AsyncSession, team_id: str | None, role: Role, *, with_load: bool,
        hours: TeamHours = ALWAYS_OPEN,
    ) -> list[Rep]:
        """The pool's people in roster order, those without hours of their own on the team's
        `hours`; with `with_load`, their open assignments too."""
        key = (team_id, role)
        ids = self.static.pools.get(key)
        if ids is None:
            rows = await roster_repository.people_in_pool(
                session, team_id=team_id, role=role, with_open_counts=False
            )
            self.cache.loads += 1
            ids = tuple(row["id"] for row in rows)
            for row in rows:
                self.static.rows[row["id"]] = row
                self.reps.setdefault(row["id"], roster.rep_of(row))
            self.static.positions[key] = {person_id: at for at, person_id in enumerate(ids)}
            self.static.pools[key] = ids
        missing = [person_id for person_id in ids if person_id not in self.reps]
        if missing:
            await self._read_dynamic(session, missing)
        reps = self.views.get(key)
        if reps is None or missing:
            reps = self.views[key] = [
                with_team_hours(self.reps[person_id], hours.shifts, hours.timezone)
                for person_id in ids
            ]
        if not with_load:
            return list(reps)
        loads = self.open_counts.get(key)
        if loads is None:
            loads = await roster_repository.open_assignment_counts(session, ids)
            for person_id, count in self.unwritten.items():
                if person_id in ids:
                    loads[person_id] = loads.get(person_id, 0) + count
            self.open_counts[key] = loads
        return [replace(rep, open_assignments=loads.get(rep.id, 0)) for rep in reps]

    async def counts(
        self, session: AsyncSession, team_id: str | None, role: Role, reps: list[Rep],
        since: datetime,
    ) -> dict[str, int]:
        """Leads per rep in the fairness window (read once per transaction and pool)."""
        key = (team_id, role)
        found = self.fairness_counts.get(key)
        if found is None:
            found = await roster_repository.assignment_counts(
                session, [rep.id for rep in reps], since)
            for person_id, count in self.unwritten.items():
                if any(rep.id == person_id for rep in reps):
                    found[person_id] = found.get(person_id, 0) + count
            self.fairness_counts[key] = found
        return found

    async def _read_dynamic(self, session: AsyncSession, ids: list[str] | None) -> None:
        for person_id, last_assigned_at, paused_until in await roster_repository.assignment_marks(
            session, ids
        ):
            rep = self.reps.get(person_id)
            if rep is None:
                row = self.static.rows.get(person_id)
                if row is None:
                    continue
                rep = roster.rep_of(row)
            elif rep.last_assigned_at == last_assigned_at and rep.paused_until == paused_until:
                continue
            self._set(person_id, replace(
                rep, last_assigned_at=last_assigned_at, paused_until=paused_until
            ))

    def assigned(self, rep_id: str, now: datetime, *, written: bool = True) -> None:
        """`rep_id` was offered a lead at `now` in this transaction."""
        rep = self.reps.get(rep_id)
        if rep is not None:
            self._set(rep_id, replace(rep, last_assigned_at=now))
        for loaded in (self.open_counts, self.fairness_counts):
            for key, counts in loaded.items():
                if rep_id in self.static.positions.get(key, ()):
                    counts[rep_id] = counts.get(rep_id, 0) + 1
        if not written:
            self.unwritten[rep_id] += 1

    def written(self) -> None:
        """The batch path inserted the offers it decided."""
        self.unwritten.clear()

    def released(self, rep_id: str, paused_until: datetime | None = None) -> None:
        """An open assignment of `rep_id` closed in this transaction (and they may be paused)."""
        rep = self.reps.get(rep_id)
        if rep is not None and paused_until is not None:
            self._set(rep_id, replace(rep, paused_until=paused_until))
        for counts in self.open_counts.values():
            if rep_id in counts:
                counts[rep_id] = max(0, counts[rep_id] - 1)

    def _set(self, rep_id: str, rep: Rep) -> None:
        """Change a person's per-assignment figures, in every pool view that holds them."""
        self.reps[rep_id] = rep
        for key, view in self.views.items():
            at = self.static.positions.get(key, {}).get(rep_id)
            if at is not None:
                view[at] = replace(view[at], last_assigned_at=rep.last_assigned_at,
                                   paused_until=rep.paused_until)


async def routing_state(session: AsyncSession, cache: RosterCache) -> RoutingState:
    """Take the routing lock (once per transaction) and the roster as it stands under it."""
    sync_session = session.sync_session
    transaction = sync_session.get_transaction()
    found: tuple[SessionTransaction | None, RoutingState] | None = sync_session.info.get(_STATE)
    if found is not None and found[0] is transaction:
        return found[1]
    generation, seq = await repository.lock_routing(session)
    static = cache.static
    if sync_session.info.get(repository.ROSTER_CHANGED):
        # This transaction changed the roster before routing: what it reads is its own.
        state = RoutingState(cache, Static(generation), seq, {})
    elif static is None or static.generation != generation:
        cache.invalidate()
        state = RoutingState(cache, Static(generation), seq, {})
    elif cache.seq != seq - 1:
        views = {key: list(view) for key, view in cache.views.items()}
        state = RoutingState(cache, static, seq, dict(cache.reps), views)
        if state.reps:
            cache.refreshes += 1
            await state._read_dynamic(session, None)
    else:
        views = {key: list(view) for key, view in cache.views.items()}
        state = RoutingState(cache, static, seq, dict(cache.reps), views)
    sync_session.info[_STATE] = (transaction, state)
    _listen(sync_session)
    return state


def current_state(session: AsyncSession) -> RoutingState | None:
    """The routing state of `session`'s transaction, if it took one."""
    sync_session = session.sync_session
    found: tuple[Any, RoutingState] | None = sync_session.info.get(_STATE)
    if found is None or found[0] is not sync_session.get_transaction():
        return None
    return found[1]


def _listen(sync_session: Session) -> None:
    if sync_session.info.get(_LISTENING):
        return
    sync_session.info[_LISTENING] = True

    def on_commit(committed: Session) -> None:
        if committed.in_nested_transaction():
            return
        found = committed.info.pop(_STATE, None)
        if found is None:
            return
        state: RoutingState = found[1]
        if state.spoiled or committed.info.pop(repository.ROSTER_CHANGED, False):
            state.cache.invalidate()
        else:
            state.cache.adopt(state)

    def on_rollback(rolled_back: Session, previous: SessionTransaction) -> None:
        found = rolled_back.info.get(_STATE)
        if found is None:
            return
        if previous.nested:
            found[1].spoiled = True  # in-memory changes may outlive the rolled-back savepoint
            return
        rolled_back.info.pop(_STATE, None)
        if rolled_back.info.pop(repository.ROSTER_CHANGED, False):
            found[1].cache.invalidate()  # rows it read may hold the roster change undone

    event.listen(sync_session, "after_commit", on_commit)
    event.listen(sync_session, "after_soft_rollback", on_rollback)
