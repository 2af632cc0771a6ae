"""The manager's live board (`/console/board`) and claiming a lead from the shared queue.

The board shows the manager's teams: each open offer with its rep and countdown (at risk
under a quarter of its time, breached past its deadline), the shared queue with a Claim button,
the people's presence and load, and today's accept SLA. A claim that loses says who won.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from services.router import assignment_actions
from services.router.console import queries
from services.router.console.pages import (
    DONE_WORDS,
    context_of,
    live_page,
    refused,
    signed_in,
    to,
)
from services.router.console.render import board_data
from shared.app import RuntimeDep
from shared.problems import ProblemError

routes = APIRouter(prefix="/console", include_in_schema=False)


@routes.get("/board", response_class=HTMLResponse)
async def board(request: Request, runtime: RuntimeDep, done: str = "",
                lost: str = "") -> Response:
    viewer = await signed_in(request, runtime)
    if viewer is None:
        return to("/console/sign-in")
    now = context_of(request).clock.now()
    async with runtime.db.reading() as session:
        values = await board_data(session, viewer, now)
        winner = await queries.claimant_name(session, lost[:64]) if lost else None
    error = ""
    if lost:
        error = (f"Already claimed by {winner}." if winner
                 else "Someone else claimed this lead first.")
    return live_page(request, "board.html", "_board.html",
                     {**values, "notice": DONE_WORDS.get(done, ""), "error": error})


@routes.post("/queue/{lead_id}/claim")
async def claim(request: Request, runtime: RuntimeDep, lead_id: str,
                csrf: Annotated[str, Form(max_length=100)] = "") -> Response:
    """The first claim wins (one conditional update in the service); the others are sent
    back to the board, which names who holds the lead now."""
    viewer = await signed_in(request, runtime)
    if (stop := refused(request, viewer, csrf)) is not None:
        return stop
    assert viewer is not None
    async with runtime.db.reading() as session:
        teams = await assignment_actions.claimable_teams(session, viewer.person_id)
    try:
        async with runtime.db.transaction() as session:
            await assignment_actions.claim_from_queue(
                session, context_of(request), lead_id, viewer.person_id, teams)
    except ProblemError as problem:
        if problem.status not in (404, 409):
            raise
        return to(f"/console/board?lost={quote(lead_id[:64])}")
    return to("/console/board?done=claimed")
