"""When a notification attempt counts as delivered, is retried or given up (`outcome_of`), how
long to wait before the next one (`retry_delay`, `parse_retry_after`), and how long a claimed
notification is leased (`notification_lease`)."""

from __future__ import annotations

from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Literal

from services.router.settings import RouterSettings
from shared.clock import as_utc

Outcome = Literal["delivered", "retry", "failed"]

RETRIED_STATUSES = frozenset({408, 429})
LEASE_MARGIN_SECONDS = 10.0


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP date), if usable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (as_utc(moment) - now).total_seconds())


def retry_delay(
    attempt: int, *, base: float, cap: float, retry_after: float | None, jitter: float
) -> float:
    """Seconds before the next attempt after failed attempt number `attempt` (1, 2, ...).

    The receiver's `Retry-After` wins; otherwise `base * 2 ** (attempt - 1)` capped at `cap`,
    scaled by a random factor between 0.5 and 1 (`jitter` in [0, 1)) so that receivers coming
    back from an outage are not hit by every retry at once.
    """
    if retry_after is not None:
        return retry_after
    ceiling = min(cap, base * 2.0 ** (attempt - 1))
    return ceiling * (0.5 + jitter / 2)


def outcome_of(status_code: int | None, attempt: int, max_attempts: int) -> Outcome:
    """Delivered on 2xx; retried on no answer, 5xx, 408, 429 while attempts remain."""
    if status_code is not None and 200 <= status_code < 300:
        return "delivered"
    if status_code == 410:
        return "failed"
    retriable = status_code is None or status_code >= 500 or status_code in RETRIED_STATUSES
    return "retry" if retriable and attempt < max_attempts else "failed"


def notification_lease(settings: RouterSettings) -> timedelta:
    """How long a claimed notification stays off other loops: its call's timeout, and a margin."""
    return timedelta(seconds=settings.notify_timeout_seconds + LEASE_MARGIN_SECONDS)
