"""The console's sign-in, sign-out and the rep's inbox with its actions (`/console/...`).

Every page is server-rendered HTML; every action is a plain form POST carrying the session's
CSRF token, answered by a redirect back to the page (so it works without JavaScript and from
the keyboard). Actions call the service layer, as the API does: the same checks, the same
409 when an offer already closed.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from services.router import assignment_actions, repository, roster, roster_repository
from services.router.access import token_hash
from services.router.console import sessions
from services.router.console.render import digest, fragment, inbox_data, templates
from services.router.console.sessions import Viewer
from services.router.console.views import DISQUALIFY_REASONS, REJECT_REASONS
from services.router.schemas import OutOfOffice, PersonFields
from services.router.service import RouterContext
from shared.app import RuntimeDep
from shared.auth import admin_tokens, token_matches
from shared.events import Bant
from shared.problems import ProblemError

routes = APIRouter(prefix="/console", include_in_schema=False)
LOGIN_CSRF_COOKIE = "leadrelay_console_login"
Text = Annotated[str, Form(max_length=2000)]
ACTIONS = ("accept", "reject", "contacted", "qualify", "disqualify")
DONE_WORDS = {"accept": "Lead accepted: make your first contact before the contact deadline.",
              "reject": "Lead turned down: it goes to the next rep.",
              "contacted": "First contact recorded.",
              "qualify": "Lead qualified: it is being handed to an AE.",
              "disqualify": "Lead disqualified: it goes back to nurturing.",
              "presence": "Presence updated.", "ooo": "Out of office saved.",
              "claimed": "The lead is yours."}
ERROR_WORDS = {"reason": "Choose a reason.", "presence": "Choose available, away or offline.",
               "ooo": "Give a start and an end after it."}
SECURITY_HEADERS = {
    "Cache-Control": "no-store", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; form-action 'self'",
}


def context_of(request: Request) -> RouterContext:
    context: RouterContext = request.app.state.router_context
    return context


def secure_cookies(request: Request) -> bool:
    return context_of(request).public_base_url.startswith("https://")


def live_page(request: Request, name: str, fragment_name: str,
              values: dict[str, Any]) -> Response:
    """A page around a live fragment, with the digest its stream starts from."""
    html = fragment(fragment_name, **values)
    return page(request, name, {**values, "fragment_html": html, "shown": digest(html)})


def page(request: Request, name: str, values: dict[str, Any], status_code: int = 200) -> Response:
    response = templates.TemplateResponse(request, name, values, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response


def to(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303, headers={"Cache-Control": "no-store"})


async def signed_in(request: Request, runtime: RuntimeDep) -> Viewer | None:
    secret = sessions.session_secret(request)
    if secret is None:
        return None
    async with runtime.db.reading() as session:
        return await sessions.find_viewer(session, secret, context_of(request).clock.now())


def refused(request: Request, viewer: Viewer | None, csrf: str) -> Response | None:
    """A redirect to sign in, a 403 page for a form without the session's CSRF token, or None."""
    if viewer is None:
        return to("/console/sign-in")
    if not sessions.csrf_matches(viewer, csrf):
        return page(request, "message.html", {
            "viewer": viewer, "title": "This form has expired",
            "text": "Reload the page and try again."}, 403)
    return None


# Signing in and out


def login_form(request: Request, values: dict[str, Any], status_code: int = 200) -> Response:
    nonce = secrets.token_urlsafe(24)
    response = page(request, values.pop("template", "sign_in.html"),
                    {"viewer": None, "csrf": nonce, **values}, status_code)
    response.set_cookie(LOGIN_CSRF_COOKIE, nonce, path="/console", httponly=True,
                        samesite="strict", secure=secure_cookies(request))
    return response


def login_csrf_ok(request: Request, csrf: str) -> bool:
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    return bool(csrf) and bool(expected) and secrets.compare_digest(csrf, expected)


async def signed_in_response(request: Request, runtime: RuntimeDep,
                             person_id: str | None) -> Response:
    """A new session (`person_id` None: the admin's) and its cookie."""
    async with runtime.db.transaction() as session:
        secret = await sessions.start_session(session, person_id,
                                              context_of(request).clock.now())
    response = to("/console")
    sessions.set_session_cookie(response, secret, secure=secure_cookies(request))
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/console")
    return response


@routes.get("/sign-in")
async def sign_in_page(request: Request) -> Response:
    return login_form(request, {})


@routes.post("/sign-in")
async def sign_in_with_token(request: Request, runtime: RuntimeDep,
                             token: Annotated[str, Form(max_length=200)] = "",
                             csrf: Annotated[str, Form(max_length=100)] = "") -> Response:
    if not login_csrf_ok(request, csrf):
        return login_form(request, {"error": "The form expired; try again."}, 403)
    if token.strip() and token_matches(token.strip(), admin_tokens(request)):
        return await signed_in_response(request, runtime, None)
    async with runtime.db.reading() as session:
        person = await roster_repository.find_person_by_token(session, token_hash(token.strip()))
    if person is None or not person["active"]:
        return login_form(request, {"error": "That token is not valid."}, 401)
    return await signed_in_response(request, runtime, person["id"])


@routes.get("/sign-in/{secret}")
async def sign_in_link_page(request: Request, runtime: RuntimeDep, secret: str) -> Response:
    async with runtime.db.reading() as session:
        person_id = await sessions.usable_link_person(session, secret[:100],
                                                      context_of(request).clock.now())
    if person_id is None:
        return login_form(request, {"error": "This sign-in link was used already or expired. "
                                             "Ask for a new one, or sign in with your token."},
                          404)
    return login_form(request, {"template": "sign_in_link.html", "secret": secret})


@routes.post("/sign-in/{secret}")
async def sign_in_with_link(request: Request, runtime: RuntimeDep, secret: str,
                            csrf: Annotated[str, Form(max_length=100)] = "") -> Response:
    if not login_csrf_ok(request, csrf):
        return login_form(request, {"error": "The form expired; open the link again."}, 403)
    async with runtime.db.transaction() as session:
        person_id = await sessions.use_sign_in_link(session, secret[:100],
                                                    context_of(request).clock.now())
    if person_id is None:
        return login_form(request, {"error": "This sign-in link was used already or expired."},
                          404)
    return await signed_in_response(request, runtime, person_id)


@routes.post("/sign-out")
async def sign_out(request: Request, runtime: RuntimeDep,
                   csrf: Annotated[str, Form(max_length=100)] = "") -> Response:
    viewer = await signed_in(request, runtime)
    if (stop := refused(request, viewer, csrf)) is not None:
        return stop
    assert viewer is not None
    async with runtime.db.transaction() as session:
        await sessions.end_session(session, viewer)
    response = to("/console/sign-in")
    sessions.clear_session_cookie(response, secure=secure_cookies(request))
    return response


# The rep's inbox


@routes.get("")
async def home(request: Request, runtime: RuntimeDep) -> Response:
    viewer = await signed_in(request, runtime)
    if viewer is None:
        return to("/console/sign-in")
    if viewer.is_admin:
        return to("/console/reports")
    return to("/console/board" if viewer.is_manager else "/console/inbox")


@routes.get("/inbox", response_class=HTMLResponse)
async def inbox(request: Request, runtime: RuntimeDep, done: str = "", error: str = "") -> Response:
    viewer = await signed_in(request, runtime)
    if viewer is None:
        return to("/console/sign-in")
    if viewer.is_admin:
        return to("/console/reports")
    now = context_of(request).clock.now()
    async with runtime.db.reading() as session:
        values = await inbox_data(session, viewer, now)
        person = await roster_repository.find_sdr(session, viewer.person_id)
    assert person is not None
    return live_page(request, "inbox.html", "_offers.html", {
        **values, "notice": DONE_WORDS.get(done, ""), "error": ERROR_WORDS.get(error, ""),
        "presence": person["presence"], "timezone": person["timezone"],
        "out_of_office": [(period["start"], period["end"])
                          for period in person["out_of_office"] or []],
    })


async def _act(context: RouterContext, runtime: RuntimeDep, viewer: Viewer, assignment_id: str,
               action: str, form: dict[str, str]) -> None:
    async with runtime.db.transaction() as session:
        row = await repository.find_assignment(session, assignment_id)
        if row is None or row["sdr_id"] != viewer.person_id:
            raise ProblemError(404, "Assignment not found", "This lead is not in your inbox.")
        note = form.get("note") or None
        reason = form.get("reason_code", "")
        if action == "accept":
            await assignment_actions.accept_assignment(session, context, assignment_id)
        elif action == "contacted":
            await assignment_actions.mark_contacted(session, context, assignment_id)
        elif action == "reject":
            await assignment_actions.reject(session, context, assignment_id, reason, note)
        elif action == "disqualify":
            await assignment_actions.disqualify(session, context, assignment_id, reason, note)
        else:
            bant = Bant(**{key: form.get(key) or None
                           for key in ("budget", "authority", "need", "timing", "notes")})
            await assignment_actions.qualify(session, context, assignment_id, bant)


@routes.post("/assignments/{assignment_id}/{action}")
async def act(request: Request, runtime: RuntimeDep, assignment_id: str, action: str,
              csrf: Annotated[str, Form(max_length=100)] = "",
              reason_code: Annotated[str, Form(max_length=64)] = "",
              note: Text = "", budget: Text = "", authority: Text = "", need: Text = "",
              timing: Text = "", notes: Text = "") -> Response:
    viewer = await signed_in(request, runtime)
    if (stop := refused(request, viewer, csrf)) is not None:
        return stop
    assert viewer is not None
    reasons = {"reject": REJECT_REASONS, "disqualify": DISQUALIFY_REASONS}.get(action)
    if action not in ACTIONS:
        return page(request, "message.html", {"viewer": viewer, "title": "Unknown action",
                                              "text": "Go back to your inbox."}, 404)
    if reasons is not None and reason_code not in reasons:
        return to("/console/inbox?error=reason")
    try:
        await _act(context_of(request), runtime, viewer, assignment_id, action, {
            "reason_code": reason_code, "note": note, "budget": budget,
            "authority": authority, "need": need, "timing": timing, "notes": notes})
    except ProblemError as problem:
        if problem.status >= 500:
            raise
        return page(request, "message.html", {
            "viewer": viewer, "title": problem.title, "text": problem.detail or ""},
            problem.status)
    return to(f"/console/inbox?done={action}")


@routes.post("/presence")
async def set_presence(request: Request, runtime: RuntimeDep,
                       csrf: Annotated[str, Form(max_length=100)] = "",
                       presence: Annotated[str, Form(max_length=16)] = "") -> Response:
    viewer = await signed_in(request, runtime)
    if (stop := refused(request, viewer, csrf)) is not None:
        return stop
    assert viewer is not None
    try:
        fields = PersonFields.model_validate({"presence": presence})
    except ValidationError:
        return to("/console/inbox?error=presence")
    await _update_person(request, runtime, viewer, fields)
    return to("/console/inbox?done=presence")


@routes.post("/out-of-office")
async def set_out_of_office(request: Request, runtime: RuntimeDep,
                            csrf: Annotated[str, Form(max_length=100)] = "",
                            start: Annotated[str, Form(max_length=32)] = "",
                            end: Annotated[str, Form(max_length=32)] = "",
                            clear: Annotated[str, Form(max_length=8)] = "") -> Response:
    """Set the one out-of-office period (local times in the person's time zone), or clear."""
    viewer = await signed_in(request, runtime)
    if (stop := refused(request, viewer, csrf)) is not None:
        return stop
    assert viewer is not None
    periods: list[OutOfOffice] = []
    if not clear:
        async with runtime.db.reading() as session:
            person = await roster_repository.find_sdr(session, viewer.person_id)
        assert person is not None
        zone = ZoneInfo(person["timezone"])
        try:
            periods = [OutOfOffice(start=datetime.fromisoformat(start).replace(tzinfo=zone),
                                   end=datetime.fromisoformat(end).replace(tzinfo=zone))]
        except ValueError:
            return to("/console/inbox?error=ooo")
    await _update_person(request, runtime, viewer, PersonFields(out_of_office=periods))
    return to("/console/inbox?done=ooo")


async def _update_person(request: Request, runtime: RuntimeDep, viewer: Viewer,
                         fields: PersonFields) -> None:
    context = context_of(request)
    async with runtime.db.transaction() as session:
        await roster.update_person(session, context.clock, viewer.person_id, fields,
                                   context.channels)
