"""The web console served by the router at `/console`: a rep's inbox and a manager's live board.

Server-rendered (Jinja2 templates, htmx and its SSE extension vendored under `static/`, no
front-end build): `pages` (sign-in, sign-out, the inbox and its actions), `board` (the team's
live board, claiming from the shared queue), `live` (server-sent events backed by the
database), `links` (the admin's one-time sign-in links), `sessions` (cookies and CSRF).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from services.router.console import board, links, live, pages
from services.router.console.render import STATIC_DIR

routes = [pages.routes, board.routes, live.routes, links.routes]


def mount_static(app: FastAPI) -> None:
    """Serve the console's CSS and scripts at `/console/static`."""
    app.mount("/console/static", StaticFiles(directory=STATIC_DIR), name="console-static")
