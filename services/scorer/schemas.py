"""The shapes scorer's HTTP API returns."""

from __future__ import annotations

from pydantic import AwareDatetime, BaseModel

from shared.events import ScoreLine, Temperature


class LeadScoreView(BaseModel):
    """A lead's latest score; `score` is `fit + engagement`, explained line by line."""

    lead_id: str
    score: float
    fit: float
    engagement: float
    temperature: Temperature
    model_version: str
    scored_at: AwareDatetime
    breakdown: list[ScoreLine]
