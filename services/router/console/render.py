"""The console's templates and the data each page and live fragment is drawn from."""

from __future__ import annotations

import hashlib
from datetime import datetime, time
from pathlib import Path
from typing import Any

from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from sqlalchemy.ext.asyncio import AsyncSession

from services.router import assignment_actions, roster_repository
from services.router.console import queries, views
from services.router.console.sessions import Viewer

PACKAGE_DIR = Path(__file__).parent
STATIC_DIR = PACKAGE_DIR / "static"
templates = Jinja2Templates(directory=PACKAGE_DIR / "templates")


def _iso(moment: datetime | None) -> str:
    return moment.isoformat() if moment is not None else ""


def _clock_time(moment: datetime | None) -> Markup:
    """A time of day in UTC, which the page's script rewrites in the viewer's own time zone."""
    if moment is None:
        return Markup("")
    return Markup('<time class="clock-time" datetime="{}">{} UTC</time>').format(
        moment.isoformat(), f"{moment:%H:%M:%S}")


templates.env.filters["iso"] = _iso
templates.env.filters["hhmm"] = _clock_time


def fragment(name: str, **values: Any) -> str:
    """A template rendered outside a request (the live streams' fragments)."""
    return templates.env.get_template(name).render(**values)


def digest(html: str) -> str:
    """What a live stream calls a fragment it sent (its event id): the page that shows it
    gets no copy of it again, so nothing the page is doing (a focused button) is swapped
    away for nothing."""
    return hashlib.sha256(html.encode()).hexdigest()[:32]


async def inbox_data(session: AsyncSession, viewer: Viewer, now: datetime) -> dict[str, Any]:
    rows = await queries.open_assignments_of(session, viewer.person_id)
    names = {person["id"]: person["name"] for person in await roster_repository.list_sdrs(session)}
    return {"offers": [views.offer_card(row, names, now) for row in rows],
            "viewer": viewer, "now": now,
            "reject_reasons": views.REJECT_REASONS,
            "disqualify_reasons": views.DISQUALIFY_REASONS}


async def board_data(session: AsyncSession, viewer: Viewer, now: datetime) -> dict[str, Any]:
    team_ids = sorted(await assignment_actions.claimable_teams(session, viewer.person_id))
    teams = {row["id"]: row["name"] for row in await queries.teams(session, team_ids)}
    offers = await queries.open_offers_of_teams(session, team_ids,
                                                now - views.BREACHED_SHOWN_FOR)
    queued = await queries.queued_leads(session, team_ids)
    people = await queries.members(session, team_ids)
    today = datetime.combine(now.date(), time.min, tzinfo=now.tzinfo)
    sla = views.sla_today(await queries.team_assignments_since(session, team_ids, today))
    return {
        "viewer": viewer, "now": now, "teams": list(teams.values()),
        "offers": [views.board_offer(row, now) for row in offers],
        "queue": [{"lead_id": row["id"], "team": teams.get(row["queue_team_id"], ""),
                   "queued_at": row["queued_at"], "temperature": row["temperature"],
                   "name": (row["profile"] or {}).get("name") or "Unnamed lead",
                   "company": (row["profile"] or {}).get("company")} for row in queued],
        "people": [{"name": person["name"], "role": person["role"],
                    "presence": views.presence_words(person, now),
                    "load": views.load_words(person)} for person in people],
        "sla": sla,
    }
