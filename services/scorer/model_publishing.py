"""The scoring model in force: cached by each instance and refreshed from the database
(`ScoringModels`), published through the API (`publish_model`), validated (`parse_model_document`).

Functions here take the caller's session and never commit."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from services.scorer import repository
from services.scorer.models import AUDIT
from services.scorer.scoring_model import ScoringModel, parse_scoring_model
from shared import audit
from shared.clock import Clock
from shared.db import Database
from shared.outages import OutageLog, is_outage
from shared.problems import ProblemError

if TYPE_CHECKING:
    from services.scorer.context import ScorerContext


class ScoringModels:
    """The scoring model in force, cached in memory and refreshed from the database.

    At start the model file is published unless its version already was (an operator who
    edits the file and changes its version gets it in force; a version published since through
    the API is not overridden by a restart). Every instance then re-reads the model in force
    every `refresh_seconds`, so a `PUT` on one instance reaches the others that quickly.
    """

    def __init__(self, file_model: ScoringModel, *, refresh_seconds: float = 5.0) -> None:
        self.file_model = file_model
        self.current = file_model
        self.refresh_seconds = refresh_seconds

    async def install(self, session: AsyncSession, now: datetime) -> None:
        """Publish the file's model if its version is new; then use the one in force."""
        await repository.insert_model_unless_published(
            session, _model_row(self.file_model, "file", now)
        )
        await self.refresh(session)

    async def refresh(self, session: AsyncSession) -> None:
        row = await repository.current_model(session)
        if row is not None and row["version"] != self.current.version:
            self.current = parse_scoring_model(row["document"])

    async def run(self, db: Database, clock: Clock) -> None:
        """The `scoring-model` loop: install at start, then refresh now and then."""
        async with db.transaction() as session:
            await self.install(session, clock.now())
        outage = OutageLog("scoring model refresh")
        while True:
            await asyncio.sleep(self.refresh_seconds)
            try:
                async with db.reading() as session:
                    await self.refresh(session)
            except Exception as error:
                if not is_outage(error):
                    raise
                outage.failed(error)
                continue
            outage.recovered()

async def publish_model(
    session: AsyncSession, context: ScorerContext, model: ScoringModel
) -> None:
    """Put `model` in force; every lead is rescored against it by the sweep."""
    if await repository.find_model(session, model.version) is not None:
        raise ProblemError(
            409, "Version already published",
            f"A scoring model with version {model.version!r} was published before; "
            "give this one a new version.",
            slug="model-version-taken",
        )
    now = context.clock.now()
    current = await repository.current_model(session)
    await repository.insert_model(session, _model_row(model, "api", now))
    await repository.recheck_all_scores(session, now)
    await audit.record(session, AUDIT, at=now, action="scoring_model.published",
                       subject="scoring-model",
                       before=None if current is None else dict(current["document"]),
                       after=model.document())


def parse_model_document(document: Any) -> ScoringModel:
    """Validate a scoring model sent to the API; a 422 problem lists every mistake."""
    try:
        return parse_scoring_model(document)
    except ValidationError as error:
        raise ProblemError(
            422, "Invalid scoring model",
            f"The scoring model has {error.error_count()} error(s); nothing was published.",
            slug="invalid-scoring-model",
            errors=[
                {
                    "field": ".".join(str(part) for part in item["loc"]) or "document",
                    "in": "body",
                    "message": item["msg"],
                }
                for item in error.errors(include_url=False)
            ],
        ) from None


def _model_row(model: ScoringModel, source: str, now: datetime) -> dict[str, Any]:
    return {
        "version": model.version,
        "document": model.document(),
        "source": source,
        "published_at": now,
    }
