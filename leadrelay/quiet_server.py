"""`QuietServer`: uvicorn's server, awake once a second instead of ten times when idle.

uvicorn's `Server.main_loop` sleeps 100 ms between two ticks (`on_tick`): each tick looks
whether a signal asked it to stop, and every tenth one renews the `Date` header. In a service
with nothing to do those ten wake-ups a second were a sixth of all its wake-ups. Here a tick comes
once a second, still renewing the `Date` header each time; a stop signal wakes the loop at
once instead of waiting for the tick.

It relies on two of uvicorn's internals, checked in `tests/test_library_internals.py`:
`main_loop` is what `serve` awaits between start-up and shutdown, and `on_tick(counter)`
renews the headers when `counter % 10 == 0` and answers whether to stop.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import FrameType

import uvicorn

TICK_SECONDS = 1.0
TICKS_PER_WAKE = 10
"""uvicorn counts ticks of 100 ms; one wake-up here stands for ten of them."""


class QuietServer(uvicorn.Server):
    """`uvicorn.Server` whose idle loop wakes once a second, and at once when told to stop."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_asked: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._loop, self._stop_asked = asyncio.get_running_loop(), asyncio.Event()
        counter = 0
        should_exit = await self.on_tick(counter)
        while not should_exit:
            counter = (counter + TICKS_PER_WAKE) % 864_000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop_asked.wait(), TICK_SECONDS)
            should_exit = await self.on_tick(counter)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # A signal handler runs between two bytecodes of the loop's thread: the event is set
        # through the loop's wake-up pipe, as from another thread.
        if self._loop is not None and self._stop_asked is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop_asked.set)
