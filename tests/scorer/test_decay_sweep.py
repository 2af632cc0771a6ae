"""The decay sweep with a manual clock: a quiet lead cools one band at a time, published once."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import select

from services.scorer import model_publishing
from services.scorer.context import ScorerContext
from services.scorer.decay import DecaySweep
from services.scorer.model_publishing import ScoringModels
from services.scorer.models import scoring_model
from services.scorer.scoring_model import ScoringModel, Thresholds
from shared.clock import ManualClock
from shared.db import Database
from shared.problems import ProblemError
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
    # The third download (hot already) moved only the engagement points: not published.
    assert await temperatures(scorer) == ["cold", "warm", "hot", "warm"]
    assert (cooled["temperature"], cooled["stage"]) == ("warm", "mql")
    assert 50 < cooled["score"] < 60

    clock.advance(timedelta(days=60))
    assert await sweep.tick() == 1
    assert await temperatures(scorer) == ["cold", "warm", "hot", "warm", "cold"]
    # Cold, and all that fades adds points: nothing left for decay to change.
    assert (await scorer.stored())["next_check_at"] is None


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
    # The third download (hot already) moved only the engagement points: not published.
    assert await temperatures(scorer) == ["cold", "warm", "hot", "warm"]


async def test_a_new_signal_moves_the_next_check(
    scorer: Scorer, clock: ManualClock
) -> None:
    await hot_by_downloads(scorer)
    first = (await scorer.stored())["next_check_at"]
    clock.advance(timedelta(days=5))
    await scorer.apply(scorer.signal("email_open"))
    assert (await scorer.stored())["next_check_at"] > first


async def test_a_new_model_is_applied_to_every_lead_by_the_sweep(
    scorer: Scorer, context: ScorerContext, clock: ManualClock, db: Database
) -> None:
    await scorer.apply(scorer.received())
    assert (await scorer.stored())["temperature"] == "cold"
    stricter = context.models.current.model_copy(
        update={"version": "warmer-1", "thresholds": Thresholds(warm=10, hot=60)}
    )

    async with db.transaction() as session:
        await model_publishing.publish_model(session, context, stricter)
    context.models.current = stricter
    swept = await DecaySweep(db, context, interval=1, batch_size=10).tick()

    row = await scorer.stored()
    assert swept == 1
    assert (row["model_version"], row["temperature"]) == ("warmer-1", "warm")
    assert [event.data.model_version for event in await scorer.published("lead.scored")] == [
        "default-2", "warmer-1"
    ]
    async with db.transaction() as session:
        with pytest.raises(ProblemError, match="was published before"):
            await model_publishing.publish_model(session, context, stricter)


async def test_the_model_file_is_installed_once_and_a_published_one_survives_a_restart(
    context: ScorerContext, clock: ManualClock, db: Database, model: ScoringModel
) -> None:
    async with db.transaction() as session:
        await context.models.install(session, clock.now())
        newer = model.model_copy(update={"version": "api-1"})
        await model_publishing.publish_model(session, context, newer)

    restarted = ScoringModels(model)
    async with db.transaction() as session:
        await restarted.install(session, clock.now())
        rows = await session.execute(select(scoring_model.c.version, scoring_model.c.source)
                                     .order_by(scoring_model.c.id))

    assert restarted.current == newer
    assert rows.all() == [("default-2", "file"), ("api-1", "api")]
