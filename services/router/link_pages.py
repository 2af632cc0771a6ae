"""The pages behind action links: what a rep sees on opening the Accept link of a notification,
and a manager the Claim link of an escalation notice.

`GET /v1/assignments/{id}/accept?token=...` shows which lead and what the button does; the
button POSTs the token in the form body to `.../accept/confirm`, which accepts and says so.
`GET /v1/queue/{lead_id}/claim?person=...&token=...` and its `.../claim/confirm` do the same
for claiming a queued lead as that person (a lead someone claimed first names who did).
A link that is expired, forged, or for another assignment or action gets a page saying so,
never JSON. The pages are self-contained (inline CSS, no script, no external asset) and fit a
390-px-wide phone screen.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from html import escape
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncSession

from services.router import assignment_actions, repository
from services.router.action_links import LinkCheck, check_link, claim_subject
from services.router.service import RouterContext
from shared.app import RuntimeDep
from shared.problems import ProblemError

routes = APIRouter(prefix="/v1", tags=["action links"])

ACTION_WORDS = {"accept": ("Accept this lead", "Accept", "Lead accepted"),
                "claim": ("Claim this lead", "Claim", "Lead claimed")}

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{title} · leadrelay</title>
<style>
body{{font:16px/1.5 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;padding:24px 16px;
background:#f4f5f7;color:#1d2330}}
main{{max-width:420px;margin:0 auto;background:#fff;border-radius:12px;padding:20px;
box-shadow:0 1px 3px rgba(0,0,0,.12)}}
h1{{font-size:1.3rem;margin:0 0 12px}}
dl{{margin:0 0 16px}}dt{{font-size:.8rem;color:#5b6475;text-transform:uppercase}}
dd{{margin:0 0 8px;overflow-wrap:anywhere}}
button{{width:100%;font:inherit;font-weight:600;padding:14px;border:0;border-radius:8px;
background:#1f6feb;color:#fff;cursor:pointer}}
p{{margin:0 0 12px}}
</style></head>
<body><main>
<h1>{title}</h1>
{body}
</main></body></html>
"""


def page(title: str, body: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(
        _PAGE.format(title=escape(title), body=body), status_code=status_code,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
                 "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                            "form-action 'self'"},
    )


def _html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


PAGES: dict[int | str, dict[str, Any]] = {
    404: _html("The link is not valid (a page saying so)"),
    409: _html("The offer is no longer waiting (a page saying so)"),
    410: _html("The link has expired (a page saying so)"),
}
"""A link's refusals are pages for a person, not problem documents."""


def refused_page(check: LinkCheck) -> HTMLResponse:
    if check is LinkCheck.EXPIRED:
        return page("This link has expired", "<p>The offer it was for has closed. Open the "
                    "leadrelay API or your latest notification to see your leads.</p>", 410)
    return page("This link is not valid", "<p>It may have been copied incompletely, or it is "
                "for another lead or action. Use the button of your notification.</p>", 404)


def _lead_facts(row: Any, *, deadline: bool = True) -> str:
    lead: dict[str, Any] = row["lead_snapshot"] or {}
    facts = [("Lead", lead.get("name")), ("Company", lead.get("company")),
             ("Country", lead.get("country")), ("Source", lead.get("source"))]
    if deadline:
        facts.append(("Accept before", row["deadline_at"].strftime("%Y-%m-%d %H:%M UTC")))
    items = "".join(f"<dt>{escape(name)}</dt><dd>{escape(str(value))}</dd>"
                    for name, value in facts if value)
    return f"<dl>{items}</dl>"


def _context(request: Request) -> RouterContext:
    context: RouterContext = request.app.state.router_context
    return context


async def _checked(
    request: Request, runtime: RuntimeDep, subject: str, action: str, token: str,
    load: Callable[[AsyncSession], Awaitable[Any]],
) -> tuple[Any, HTMLResponse | None]:
    """The row `load` reads (the assignment a link names, for its facts) when the link for
    `subject` and `action` is valid; else the page saying why it is not."""
    context = _context(request)
    check = check_link(context.action_keys, subject, action, token, context.clock.now())
    if check is not LinkCheck.VALID:
        return None, refused_page(check)
    async with runtime.db.reading() as session:
        row = await load(session)
    if row is None:
        return None, refused_page(LinkCheck.INVALID)
    return row, None


async def _checked_accept(request: Request, runtime: RuntimeDep, assignment_id: str,
                          token: str) -> tuple[Any, HTMLResponse | None]:
    return await _checked(request, runtime, assignment_id, "accept", token,
                          lambda session: repository.find_assignment(session, assignment_id))


@routes.get("/assignments/{assignment_id}/accept", response_class=HTMLResponse, responses=PAGES,
            summary="The page an Accept link opens (confirm with its button)")
async def accept_page(
    request: Request, runtime: RuntimeDep, assignment_id: str,
    token: Annotated[str, Query(max_length=200)] = "",
) -> HTMLResponse:
    row, refused = await _checked_accept(request, runtime, assignment_id, token)
    if refused is not None:
        return refused
    title, button, _ = ACTION_WORDS["accept"]
    if row["status"] != "offered":
        return page("This lead is no longer waiting", f"{_lead_facts(row)}<p>This offer is "
                    f"{escape(row['status'])}: there is nothing to accept.</p>", 409)
    form = (f'<form method="post" action="/v1/assignments/{escape(assignment_id)}/accept/confirm">'
            f'<input type="hidden" name="token" value="{escape(token)}">'
            f'<button type="submit">{escape(button)}</button></form>')
    return page(title, _lead_facts(row) + form)


@routes.post("/assignments/{assignment_id}/accept/confirm", response_class=HTMLResponse,
             responses=PAGES, summary="Accept through a link's confirmation page (form post)")
async def confirm_accept(
    request: Request, runtime: RuntimeDep, assignment_id: str,
    token: Annotated[str, Form(max_length=200)] = "",
) -> HTMLResponse:
    row, refused = await _checked_accept(request, runtime, assignment_id, token)
    if refused is not None:
        return refused
    try:
        async with runtime.db.transaction() as session:
            accepted = await assignment_actions.accept_assignment(
                session, _context(request), assignment_id)
    except ProblemError as problem:
        if problem.status != 409:
            raise
        reason = escape(problem.detail or problem.title)
        return page("This lead is no longer waiting", f"{_lead_facts(row)}<p>{reason}</p>", 409)
    return page(ACTION_WORDS["accept"][2], f"{_lead_facts(accepted)}<p>The lead is yours: "
                "make your first contact before the contact deadline.</p>")


async def _checked_claim(request: Request, runtime: RuntimeDep, lead_id: str, person_id: str,
                         token: str) -> tuple[Any, HTMLResponse | None]:
    """The lead's latest assignment (for its facts) when the claim link is valid."""
    return await _checked(request, runtime, claim_subject(lead_id, person_id), "claim", token,
                          lambda session: repository.latest_assignment(session, lead_id))


@routes.get("/queue/{lead_id}/claim", response_class=HTMLResponse, responses=PAGES,
            summary="The page a Claim link opens (confirm with its button)")
async def claim_page(
    request: Request, runtime: RuntimeDep, lead_id: str,
    person: Annotated[str, Query(max_length=64)] = "",
    token: Annotated[str, Query(max_length=200)] = "",
) -> HTMLResponse:
    latest, refused = await _checked_claim(request, runtime, lead_id, person, token)
    if refused is not None:
        return refused
    title, button, _ = ACTION_WORDS["claim"]
    form = (f'<form method="post" action="/v1/queue/{escape(lead_id)}/claim/confirm">'
            f'<input type="hidden" name="person" value="{escape(person)}">'
            f'<input type="hidden" name="token" value="{escape(token)}">'
            f'<button type="submit">{escape(button)}</button></form>')
    return page(title, _lead_facts(latest, deadline=False)
                + "<p>It waits in your team's queue: the first to claim it gets it.</p>" + form)


@routes.post("/queue/{lead_id}/claim/confirm", response_class=HTMLResponse,
             responses=PAGES,
             summary="Claim a queued lead through a link's confirmation page (form post)")
async def confirm_claim(
    request: Request, runtime: RuntimeDep, lead_id: str,
    person: Annotated[str, Form(max_length=64)] = "",
    token: Annotated[str, Form(max_length=200)] = "",
) -> HTMLResponse:
    latest, refused = await _checked_claim(request, runtime, lead_id, person, token)
    if refused is not None:
        return refused
    async with runtime.db.reading() as session:
        teams = await assignment_actions.claimable_teams(session, person)
    try:
        async with runtime.db.transaction() as session:
            claimed = await assignment_actions.claim_from_queue(
                session, _context(request), lead_id, person, teams)
    except ProblemError as problem:
        if problem.status not in (404, 409):
            raise
        reason = escape(problem.detail or problem.title)
        return page("This lead is no longer in the queue",
                    f"{_lead_facts(latest, deadline=False)}<p>{reason}</p>", 409)
    return page(ACTION_WORDS["claim"][2], f"{_lead_facts(claimed)}<p>The lead is yours: "
                "make your first contact before the contact deadline.</p>")
