"""Periodic background work that rides out database outages.

`repeat(tick, interval=..., name=...)` calls `tick` forever: again at once when it reports more
work pending, after `interval` seconds otherwise, and after a growing pause (capped at 5 s) while
the database is unavailable, with one warning when that starts and one info line when it ends
(`shared.outages.OutageLog`). Any other error propagates to the runtime's supervisor.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from shared.outages import OutageLog, is_outage


async def repeat(tick: Callable[[], Awaitable[bool]], *, interval: float, name: str) -> None:
    """Run `tick` forever; it returns True when more work may already be due."""
    outage = OutageLog(name)
    while True:
        try:
            more = await tick()
        except Exception as error:
            if not is_outage(error):
                raise
            await asyncio.sleep(outage.failed(error))
            continue
        outage.recovered()
        await asyncio.sleep(0 if more else interval)
