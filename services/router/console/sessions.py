"""Who is signed in to the console: one-time sign-in links, sessions, CSRF tokens.

A sign-in link (`/console/sign-in/<secret>`) is issued by the admin for one person, works once
and expires after `LINK_LIFETIME`. Opening it shows a button (so a mail scanner's GET uses
nothing); its POST creates a session. A person can also sign in with one of their API tokens,
and the admin with the admin token (a session with no person: the reports and the rules).

A session is a random secret in an HttpOnly, SameSite=Strict cookie (Secure when the router's
public URL is https); the database keeps its SHA-256, the person, a CSRF token and the expiry,
so signing out ends it on every router instance at once. Every form carries the session's
CSRF token, compared in constant time with the stored one.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import Request, Response
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from services.router.access import token_hash
from services.router.console.models import console_session, sign_in_link
from services.router.models import sdr

COOKIE = "leadrelay_console"
SESSION_LIFETIME = timedelta(hours=12)
LINK_LIFETIME = timedelta(hours=24)
ADMIN_ROLE = "admin"
"""The role of a session started with the admin token (it has no person)."""


@dataclass(frozen=True)
class Viewer:
    """The signed-in person of a console request."""

    person_id: str
    name: str
    role: str
    csrf_token: str
    session_hash: str

    @property
    def is_manager(self) -> bool:
        return self.role == "manager"

    @property
    def sees_reports(self) -> bool:
        return self.role in ("manager", ADMIN_ROLE)

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN_ROLE


async def issue_sign_in_link(session: AsyncSession, person_id: str, now: datetime) -> str:
    """A new one-time sign-in secret for `person_id`; only its hash is stored."""
    secret = secrets.token_urlsafe(32)
    await session.execute(insert(sign_in_link).values(
        token_hash=token_hash(secret), person_id=person_id, created_at=now,
        expires_at=now + LINK_LIFETIME))
    return secret


async def usable_link_person(session: AsyncSession, secret: str, now: datetime) -> str | None:
    """The person an unused, unexpired sign-in link is for; None otherwise."""
    row = (await session.execute(select(sign_in_link).where(
        sign_in_link.c.token_hash == token_hash(secret)))).mappings().first()
    if row is None or row["used_at"] is not None or row["expires_at"] < now:
        return None
    person_id: str = row["person_id"]
    return person_id


async def use_sign_in_link(session: AsyncSession, secret: str, now: datetime) -> str | None:
    """Spend a sign-in link (one conditional update: two clicks racing sign in once)."""
    person_id = await usable_link_person(session, secret, now)
    if person_id is None:
        return None
    spent = await session.execute(update(sign_in_link).where(
        sign_in_link.c.token_hash == token_hash(secret), sign_in_link.c.used_at.is_(None),
    ).values(used_at=now))
    return person_id if getattr(spent, "rowcount", 0) == 1 else None


async def start_session(session: AsyncSession, person_id: str | None, now: datetime) -> str:
    """A new session for `person_id` (None: the admin); returns the cookie's secret."""
    secret = secrets.token_urlsafe(32)
    await session.execute(insert(console_session).values(
        token_hash=token_hash(secret), person_id=person_id,
        csrf_token=secrets.token_urlsafe(32), created_at=now, expires_at=now + SESSION_LIFETIME))
    await session.execute(delete(console_session).where(console_session.c.expires_at < now))
    return secret


async def find_viewer(session: AsyncSession, secret: str, now: datetime) -> Viewer | None:
    hashed = token_hash(secret)
    row = (await session.execute(
        select(console_session.c.csrf_token, console_session.c.expires_at, sdr.c.id, sdr.c.name,
               sdr.c.role, sdr.c.active)
        .outerjoin(sdr, sdr.c.id == console_session.c.person_id)
        .where(console_session.c.token_hash == hashed))).mappings().first()
    if row is None or row["expires_at"] < now:
        return None
    if row["id"] is None:
        return Viewer(person_id="", name="Admin", role=ADMIN_ROLE,
                      csrf_token=row["csrf_token"], session_hash=hashed)
    if not row["active"]:
        return None
    return Viewer(person_id=row["id"], name=row["name"], role=row["role"],
                  csrf_token=row["csrf_token"], session_hash=hashed)


async def end_session(session: AsyncSession, viewer: Viewer) -> None:
    await session.execute(delete(console_session).where(
        console_session.c.token_hash == viewer.session_hash))


def csrf_matches(viewer: Viewer, given: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), viewer.csrf_token.encode())


def session_secret(request: Request) -> str | None:
    return request.cookies.get(COOKIE) or None


def set_session_cookie(response: Response, secret: str, *, secure: bool) -> None:
    response.set_cookie(COOKIE, secret, max_age=int(SESSION_LIFETIME.total_seconds()),
                        path="/console", httponly=True, samesite="strict", secure=secure)


def clear_session_cookie(response: Response, *, secure: bool) -> None:
    response.delete_cookie(COOKIE, path="/console", httponly=True, samesite="strict",
                           secure=secure)
