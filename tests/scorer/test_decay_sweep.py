"""The decay sweep with a manual clock: a quiet lead cools one band at a time, published once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from services.scorer.decay import DecaySweep
from services.scorer.service import ScorerContext
from shared.clock import ManualClock
from shared.db import Database
from tests.scorer.conftest import Scorer


async def hot_by_downloads(scorer: Scorer) -> None:
    """Fit 20 + three downloads (20 each, half-life 30 days): 80, hot until about day 17.5."""
    await scorer.apply(scorer.received(), *(scorer.signal("content_download") for _ in range(3)))
    row = await scorer.stored()
    assert (row["score"], row["temperature"]) == (80, "hot")


async def temperatures(scorer: Scorer) -> list[str]:
    return [event.data.temperature for event in await scorer.published("lead.scored")]


async def test_a_quiet_lead_cools_and_each_crossing_is_published_once(
    scorer: Scorer, context: ScorerContext, clock: ManualClock, db: Database
) -> None:
    sweep = DecaySweep(db, context, interval=1, batch_size=10)
    await hot_by_downloads(scorer)
    row = await scorer.stored()
    crossing = row["next_check_at"] - clock.now()
    assert timedelta(days=17.5) < crossing < timedelta(days=17.6)

    clock.advance(timedelta(days=10))
    assert await sweep.tick() == 0
    clock.advance(timedelta(days=8))
    assert await sweep.tick() == 1
    assert await sweep.tick() == 0
    clock.advance(timedelta(days=1))
    assert await sweep.tick() == 0

    cooled = await scorer.stored()
    assert await temperatures(scorer) == ["cold", "warm", "hot", "hot", "warm"]
    assert (cooled["temperature"], cooled["stage"]) == ("warm", "mql")
    assert 50 < cooled["score"] < 60

    clock.advance(timedelta(days=60))
    assert await sweep.tick() == 1
    assert await temperatures(scorer) == ["cold", "warm", "hot", "hot", "warm", "cold"]
    assert (await scorer.stored())["next_check_at"] is not None


async def test_two_sweepers_at_once_publish_the_crossing_once(
    scorer: Scorer, context: ScorerContext, clock: ManualClock, migrated_url: str, db: Database
) -> None:
    await hot_by_downloads(scorer)
    clock.advance(timedelta(days=18))
    other_db = Database(migrated_url)
    try:
        sweeps = [DecaySweep(database, context, interval=1, batch_size=10)
                  for database in (db, other_db)]
        counts = await asyncio.gather(*(sweep.tick() for sweep in sweeps))
    finally:
        await other_db.dispose()
    assert sorted(counts) == [0, 1]
    assert await temperatures(scorer) == ["cold", "warm", "hot", "hot", "warm"]


async def test_a_new_signal_moves_the_next_check(
    scorer: Scorer, clock: ManualClock
) -> None:
    await hot_by_downloads(scorer)
    first = (await scorer.stored())["next_check_at"]
    clock.advance(timedelta(days=5))
    await scorer.apply(scorer.signal("email_open"))
    assert (await scorer.stored())["next_check_at"] > first
