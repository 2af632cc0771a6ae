"""The web console served by the router at `/console`: a rep's inbox, a manager's live board,
the reports and the admin's rules studio.

Server-rendered (Jinja2 templates, htmx and its SSE extension vendored under `static/`, no
front-end build): `pages` (sign-in, sign-out, the inbox and its actions), `board` (the team's
live board, claiming from the shared queue), `live` (server-sent events backed by the
database), `links` (the admin's one-time sign-in links), `sessions` (cookies and CSRF),
`report_pages` (the reports, drawn by `charts` as SVG), `studio` (rules studio and what-if
replay), `scorer_api` (the scorer's funnel and model replay, over HTTP).
"""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from services.router.console import board, links, live, pages, report_pages, studio
from services.router.console.render import STATIC_DIR

routes = [pages.routes, board.routes, live.routes, links.routes, report_pages.routes,
          studio.routes]
_SIGN_IN_SECRET = re.compile(r"(/console/sign-in/)[^\s\"'?]+")


class RedactSignInLinks(logging.Filter):
    """Replaces the secret of a sign-in link in a log line (uvicorn's access log quotes the
    path) by `[redacted]`: an unused link read from a log would sign its reader in."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = _SIGN_IN_SECRET.sub(r"\1[redacted]", record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(
                _SIGN_IN_SECRET.sub(r"\1[redacted]", arg) if isinstance(arg, str) else arg
                for arg in record.args
            )
        return True


REDACT_SIGN_IN_LINKS = RedactSignInLinks()


def install(app: FastAPI) -> None:
    """Serve the console's CSS and scripts at `/console/static`; keep sign-in links out of
    the access log."""
    app.mount("/console/static", StaticFiles(directory=STATIC_DIR), name="console-static")
    for name in ("uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).addFilter(REDACT_SIGN_IN_LINKS)
