"""Periodic background work that rides out database outages.

`repeat(tick, interval=..., name=...)` calls `tick` forever: again at once when it reports more
work pending, after `interval` seconds otherwise, and after a growing pause (capped at 5 s) while
the database is unreachable. Any other error propagates to the runtime's supervisor.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from shared.db import is_outage

logger = logging.getLogger(__name__)


async def repeat(tick: Callable[[], Awaitable[bool]], *, interval: float, name: str) -> None:
    """Run `tick` forever; it returns True when more work may already be due."""
    failures = 0
    while True:
        try:
            more = await tick()
            failures = 0
        except Exception as error:
            if not is_outage(error):
                raise
            failures += 1
            logger.warning("%s: database unavailable (%s)", name, type(error).__name__)
            await asyncio.sleep(min(0.2 * 2**failures, 5.0))
            continue
        await asyncio.sleep(0 if more else interval)
