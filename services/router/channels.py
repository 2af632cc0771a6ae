"""Where a notification goes: a person's channels, their secrets kept encrypted until sent.

A notification row refers to its channel: `sdr_id` and `channel` (`generic` or `slack`). The
generic webhook's URL is stored on the row; its signing secret is not, nor the Slack URL
(itself a credential): the row holds `slack:<digest>` instead, and the delivery loop reads
both from the person's row (encrypted, `router_sdr`) when it sends. The nurture webhook's
secret comes from the settings at that moment too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import RowMapping

from services.router import roster_repository
from shared.db import Database
from shared.encryption import SecretBox
from shared.outbound import DestinationPolicy, RefusedDestinationError
from shared.problems import ProblemError

SLACK_PREFIX = "slack:"
CHANNEL_SECRET_KEYS = ("sdr_webhook_secret", "sdr_slack_webhook_url")
"""Keys of a delivery row that carry the person's encrypted secrets, never stored with it."""


def slack_reference(slack_url: str) -> str:
    """What a Slack notification row holds for its URL: one value per URL, not the URL."""
    return SLACK_PREFIX + hashlib.sha256(slack_url.encode()).hexdigest()[:32]


def channel_secrets(person: Mapping[str, Any] | RowMapping) -> dict[str, Any]:
    """The person's encrypted channel secrets, as a delivery row carries them in memory."""
    return {"sdr_webhook_secret": person["webhook_secret"],
            "sdr_slack_webhook_url": person["slack_webhook_url"]}


def stored(row: Mapping[str, Any]) -> dict[str, Any]:
    """A delivery row without what must not be stored with it."""
    return {name: value for name, value in row.items() if name not in CHANNEL_SECRET_KEYS}


@dataclass(frozen=True)
class ChannelKeeper:
    """Checks a person's channel URLs as they are registered and encrypts their secrets."""

    secrets: SecretBox
    destinations: DestinationPolicy

    async def check_urls(self, fields: object) -> None:
        """422 when a webhook URL of `fields` (a person's, as posted) may not be called.
        Call it before the transaction: it may resolve names."""
        for name in ("webhook_url", "slack_webhook_url"):
            url = getattr(fields, name, None)
            if url is None:
                continue
            try:
                await self.destinations.check_registration(str(url))
            except RefusedDestinationError as refused:
                raise ProblemError(
                    422, "Webhook URL refused", f"{name}: {refused}",
                    slug="webhook-url-refused", field=name,
                ) from None

    def encrypted(self, values: dict[str, Any]) -> dict[str, Any]:
        """`values` of a person's row with the webhook secret and the Slack URL encrypted."""
        stored_values = dict(values)
        for name in ("webhook_secret", "slack_webhook_url"):
            if stored_values.get(name) is not None:
                stored_values[name] = self.secrets.encrypt(stored_values[name])
        return stored_values


async def reencrypt_channels(db: Database, secrets: SecretBox) -> int:
    """Encrypt every person's webhook secret and Slack URL again with the newest key (after a
    key was put in front of `LEADRELAY_ENCRYPTION_KEYS`); returns the people changed."""
    changed = 0
    async with db.transaction() as session:
        for person in await roster_repository.list_sdrs(session):
            values = {name: secrets.reencrypt(person[name])
                      for name in ("webhook_secret", "slack_webhook_url") if person[name]}
            if values:
                await roster_repository.update_person(session, person["id"], values)
                changed += 1
    return changed
