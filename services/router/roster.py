"""The roster and the rule set: people, teams, their import from YAML, rule versions.

Functions take the caller's session and never commit. A person's API token and webhook
signing secret are generated here and returned once; only the token's hash is stored. Every
change is written to the audit log (`shared.audit`) in the same session.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.engine import RowMapping
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from services.router import roster_repository
from services.router.access import new_token, token_hash
from services.router.channels import ChannelKeeper
from services.router.models import AUDIT
from services.router.reports import FairnessPool, rule_pools
from services.router.routing import (
    ALWAYS_OPEN,
    Period,
    Rep,
    Shift,
    TeamHours,
    parse_working_hours,
)
from services.router.rules import STORED, RuleSet
from services.router.schemas import (
    PersonCreate,
    PersonCreated,
    PersonFields,
    PersonView,
    RosterDocument,
    RosterImported,
    SdrCreate,
    TeamCreate,
    TeamView,
)
from services.router.signing import new_secret
from shared import audit
from shared.clock import Clock
from shared.db import new_id
from shared.problems import ProblemError

DEFAULT_RULES_VERSION = "default"


@dataclass(frozen=True)
class Joined:
    """A person just added: their row, and the secrets shown once."""

    row: RowMapping
    token: str
    webhook_secret: str | None


def _person_values(fields: PersonFields, team_free: bool = False) -> dict[str, Any]:
    values = fields.model_dump(exclude_unset=True, exclude={"teams"}, mode="json")
    for name in ("languages", "segments"):
        if name in values and values[name] is not None:
            values[name] = sorted({item.lower() for item in values[name]})
    if values.get("territories") is not None:
        values["territories"] = sorted({item.upper() for item in values["territories"]})
    return {name: value for name, value in values.items() if value is not None or name in (
        "capacity", "webhook_url", "slack_webhook_url", "working_hours")}


async def _team_ids(session: AsyncSession, names: Sequence[str]) -> list[str]:
    ids = []
    for name in names:
        found = await roster_repository.find_team_by_name(session, name)
        if found is None:
            raise ProblemError(422, "Unknown team", f"No team is named {name!r}.",
                               slug="unknown-team", team=name)
        ids.append(found["id"])
    return ids


async def create_person(
    session: AsyncSession, clock: Clock, body: PersonCreate, channels: ChannelKeeper
) -> Joined:
    """Add a person to the roster; 409 when the email is already on it. Their webhook URLs
    are checked before (`ChannelKeeper.check_urls`), outside the transaction."""
    token = new_token()
    values = _person_values(body)
    secret = body.webhook_secret or (new_secret() if body.webhook_url else None)
    values.update(
        id=new_id(), created_at=clock.now(), updated_at=clock.now(), last_assigned_at=None,
        webhook_secret=secret,
    )
    values = channels.encrypted(values)
    try:
        async with session.begin_nested():
            await roster_repository.insert_sdr(session, values)
            await roster_repository.insert_person_token(session, {
                "id": new_id(), "person_id": values["id"], "token_hash": token_hash(token),
                "label": "joined", "created_at": clock.now()})
    except IntegrityError:
        raise ProblemError(
            409, "Person already exists",
            f"Someone with the email {body.email!r} is already on the roster.",
            slug="person-exists",
        ) from None
    if body.teams:
        await roster_repository.set_memberships(session, values["id"],
                                         await _team_ids(session, body.teams))
    created = await roster_repository.find_sdr(session, values["id"])
    assert created is not None
    await audit.record(session, AUDIT, at=clock.now(), action="person.added",
                       subject=f"person:{values['id']}",
                       after=await _audited_person(session, created))
    return Joined(created, token, None if body.webhook_secret else secret)


async def create_sdr(
    session: AsyncSession, clock: Clock, body: SdrCreate, channels: ChannelKeeper
) -> Joined:
    """The first roster API: an SDR with a webhook, always working, in no team."""
    return await create_person(session, clock, PersonCreate(
        name=body.name, email=body.email, webhook_url=body.webhook_url, active=body.active,
    ), channels)


async def update_person(
    session: AsyncSession, clock: Clock, person_id: str, body: PersonFields,
    channels: ChannelKeeper,
) -> RowMapping:
    found = await roster_repository.find_sdr(session, person_id)
    if found is None:
        raise ProblemError(404, "Person not found", f"No one has the id {person_id!r}.")
    before = await _audited_person(session, found)
    values = channels.encrypted(_person_values(body))
    values["updated_at"] = clock.now()
    await roster_repository.update_person(session, person_id, values)
    if body.teams is not None:
        await roster_repository.set_memberships(
            session, person_id, await _team_ids(session, body.teams))
    updated = await roster_repository.find_sdr(session, person_id)
    assert updated is not None
    await audit.record(session, AUDIT, at=clock.now(), action="person.changed",
                       subject=f"person:{person_id}", before=before,
                       after=await _audited_person(session, updated))
    return updated


async def _audited_person(session: AsyncSession, row: RowMapping) -> dict[str, Any]:
    """A person as the audit log compares them: their fields and teams, not their
    bookkeeping (last assignment, update time)."""
    values = {key: value for key, value in row.items()
              if key not in ("updated_at", "last_assigned_at", "created_at", "token_hash",
                             "slack_webhook_url")}
    # Stored encrypted, each time with a new nonce: whether it is set is what the log compares.
    values["slack_webhook_set"] = row["slack_webhook_url"] is not None
    values["teams"] = sorted(await roster_repository.teams_of(session, row["id"]))
    return values


async def person_view(
    session: AsyncSession, row: RowMapping, joined: Joined | None = None
) -> PersonView | PersonCreated:
    values = dict(row)
    values["teams"] = await roster_repository.teams_of(session, row["id"])
    values["webhook_secret_set"] = row["webhook_secret"] is not None
    values["slack_webhook_set"] = row["slack_webhook_url"] is not None
    del values["webhook_secret"], values["slack_webhook_url"]
    if joined is None:
        return PersonView.model_validate(values)
    return PersonCreated.model_validate(
        {**values, "token": joined.token, "webhook_secret": joined.webhook_secret}
    )


async def create_team(session: AsyncSession, clock: Clock, body: TeamCreate) -> RowMapping:
    manager_id = await _manager_id(session, body.manager_email)
    values: dict[str, Any] = {
        "id": new_id(), "name": body.name, "manager_id": manager_id, "timezone": body.timezone,
        "working_hours": body.working_hours, "created_at": clock.now(),
    }
    try:
        async with session.begin_nested():
            await roster_repository.insert_team(session, values)
    except IntegrityError:
        raise ProblemError(409, "Team already exists", f"A team is named {body.name!r}.",
                           slug="team-exists") from None
    created = await roster_repository.find_team(session, values["id"])
    assert created is not None
    await audit.record(session, AUDIT, at=clock.now(), action="team.added",
                       subject=f"team:{values['id']}", after=dict(created))
    return created


async def _manager_id(session: AsyncSession, email: str | None) -> str | None:
    if email is None:
        return None
    manager = await roster_repository.find_sdr_by_email(session, email)
    if manager is None:
        raise ProblemError(422, "Unknown manager", f"No one on the roster has {email!r}.",
                           slug="unknown-person")
    found: str = manager["id"]
    return found


async def team_view(session: AsyncSession, row: RowMapping) -> TeamView:
    return TeamView.model_validate(
        {**dict(row), "members": await roster_repository.team_members(session, row["id"])}
    )


async def import_roster(
    session: AsyncSession, clock: Clock, document: RosterDocument, channels: ChannelKeeper
) -> RosterImported:
    """Create or update teams (by name) and people (by email). Managers named by a team must
    be on the roster or in the same document."""
    teams_created = teams_updated = people_updated = 0
    for team_body in document.teams:
        if await roster_repository.find_team_by_name(session, team_body.name) is None:
            await create_team(session, clock, team_body.model_copy(update={"manager_email": None}))
            teams_created += 1
        else:
            teams_updated += 1
    created: list[PersonCreated] = []
    for person in document.people:
        existing = await roster_repository.find_sdr_by_email(session, person.email)
        if existing is None:
            joined = await create_person(session, clock, person, channels)
            view = await person_view(session, joined.row, joined)
            assert isinstance(view, PersonCreated)
            created.append(view)
        else:
            fields = PersonFields.model_validate(
                person.model_dump(exclude_unset=True, exclude={"name", "email", "role"})
            )
            await update_person(session, clock, existing["id"], fields, channels)
            await roster_repository.update_person(
                session, existing["id"], {"name": person.name, "role": person.role}
            )
            await audit.record(session, AUDIT, at=clock.now(), action="person.changed",
                               subject=f"person:{existing['id']}",
                               before={"name": existing["name"], "role": existing["role"]},
                               after={"name": person.name, "role": person.role})
            people_updated += 1
    for team_body in document.teams:
        team_row = await roster_repository.find_team_by_name(session, team_body.name)
        assert team_row is not None
        team_values = {
            "manager_id": await _manager_id(session, team_body.manager_email),
            "timezone": team_body.timezone, "working_hours": team_body.working_hours,
        }
        await roster_repository.update_team(session, team_row["id"], team_values)
        await audit.record(session, AUDIT, at=clock.now(), action="team.changed",
                           subject=f"team:{team_row['id']}",
                           before={key: team_row[key] for key in team_values},
                           after=team_values)
    return RosterImported(teams_created=teams_created, teams_updated=teams_updated,
                          people_created=created, people_updated=people_updated)


# Rules


async def current_rules(
    session: AsyncSession, cache: dict[int, RuleSet] | None = None
) -> tuple[str, RuleSet, RowMapping | None]:
    """The rule set in force, its version and its head row (None: the built-in default).

    A stored version never changes, so with a `cache` (one per database: the router's
    context holds it) each version is read and parsed once.
    """
    head = await roster_repository.current_rule_set_head(session)
    if head is None:
        return DEFAULT_RULES_VERSION, RuleSet(rules=[]), None
    version = int(head["version"])
    parsed = cache.get(version) if cache is not None else None
    if parsed is None:
        row = await roster_repository.current_rule_set(session)
        assert row is not None
        parsed = RuleSet.model_validate(row["document"], context=STORED)
        if cache is not None and int(row["version"]) == version:
            cache[version] = parsed
    return str(version), parsed, head


async def store_rules(session: AsyncSession, clock: Clock, rules: RuleSet) -> RowMapping:
    """Store `rules` as the next version; every pool they name must be a team."""
    for name in sorted(rules.pools()):
        if await roster_repository.find_team_by_name(session, name) is None:
            raise ProblemError(422, "Unknown team", f"The rules name a pool {name!r} that is "
                               "not a team.", slug="unknown-team", team=name)
    current = await roster_repository.current_rule_set(session)
    version = 1 if current is None else int(current["version"]) + 1
    document = rules.model_dump(mode="json")
    await roster_repository.insert_rule_set(session, {
        "version": version, "document": document, "created_at": clock.now(),
    })
    stored = await roster_repository.current_rule_set(session)
    assert stored is not None
    await audit.record(session, AUDIT, at=clock.now(), action="rules.replaced", subject="rules",
                       before=None if current is None else {
                           "version": current["version"], **current["document"]},
                       after={"version": version, **document})
    return stored


# Rows -> routing's plain data


async def fairness_pools(
    session: AsyncSession, cache: dict[int, RuleSet] | None = None
) -> tuple[list[FairnessPool], dict[str, str]]:
    """The pools the rules in force hand leads out from, with their members of the pool's
    role; and everyone's name by id."""
    _, rule_set, _ = await current_rules(session, cache)
    people = await roster_repository.list_sdrs(session)
    names = {row["id"]: row["name"] for row in people}
    pools: list[FairnessPool] = []
    for team_name, role in rule_pools(rule_set):
        team = (await roster_repository.find_team_by_name(session, team_name)
                if team_name is not None else None)
        if team_name is not None and team is None:
            continue  # a pool the rules name but nobody created: it hands out nothing
        members = (set(await roster_repository.team_members(session, team["id"]))
                   if team is not None else None)
        pools.append(FairnessPool(
            label=team_name or f"every {role}", team_id=None if team is None else team["id"],
            role=role, members=[rep_of(row) for row in people if row["role"] == role
                                and (members is None or row["id"] in members)],
        ))
    return pools, names


def rep_of(row: RowMapping) -> Rep:
    return Rep(
        id=row["id"],
        created_at=row["created_at"],
        role=row["role"],
        active=row["active"],
        presence=row["presence"],
        timezone=row["timezone"],
        working_hours=shifts(row["working_hours"]),
        out_of_office=tuple(
            Period(_aware(period["start"]), _aware(period["end"]))
            for period in row["out_of_office"] or ()
        ),
        languages=frozenset(row["languages"] or ()),
        territories=frozenset(row["territories"] or ()),
        segments=frozenset(row["segments"] or ()),
        capacity=row["capacity"],
        open_assignments=int(row.get("open_assignments", 0) or 0),
        weight=float(row["weight"]),
        last_assigned_at=row["last_assigned_at"],
        paused_until=row["paused_until"],
    )


def team_hours(row: RowMapping | None) -> TeamHours:
    """A team's hours (always open without a team or without hours)."""
    if row is None or row["working_hours"] is None:
        return ALWAYS_OPEN
    return TeamHours(shifts(row["working_hours"]), row["timezone"])


_SCHEDULES: dict[str, tuple[Shift, ...] | None] = {}


def shifts(spec: dict[str, list[str]] | None) -> tuple[Shift, ...] | None:
    """Parsed weekly hours, one shared object per distinct schedule (reps of a team usually
    share theirs, and routing then checks each schedule once per decision)."""
    if spec is None:
        return None
    key = json.dumps(spec, sort_keys=True)
    if key not in _SCHEDULES:
        if len(_SCHEDULES) > 4096:
            _SCHEDULES.clear()
        _SCHEDULES[key] = parse_working_hours(spec)
    return _SCHEDULES[key]


def _aware(value: Any) -> Any:
    return datetime.fromisoformat(value) if isinstance(value, str) else value
