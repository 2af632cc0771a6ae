"""`repeat`: periodic work that survives database outages and surfaces real bugs."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy.exc import OperationalError

from shared.loops import repeat


async def test_outages_are_retried_and_pending_work_runs_at_once() -> None:
    calls: list[str] = []

    async def tick() -> bool:
        calls.append("tick")
        if len(calls) == 1:
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError())
        if len(calls) == 4:
            raise asyncio.CancelledError
        return True

    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(repeat(tick, interval=60, name="test"), timeout=5)
    assert len(calls) == 4, "an outage stopped the loop, or pending work waited the interval"


async def test_other_errors_propagate_to_the_supervisor() -> None:
    async def tick() -> bool:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        await repeat(tick, interval=0.01, name="test")
