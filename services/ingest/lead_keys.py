"""Each lead's data key, kept in its row: ingest seals its own events with it and hands it to
the scorer and the router, which open the events with it (`shared.sealing`).

`encode` is ingest's outbox encoder: it reads the keys of the leads of the events it is
given in one statement, in the transaction that wrote them (a lead created in it is there).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from services.ingest import repository
from shared.events import Envelope, encode_event
from shared.lead_keys import seal_json
from shared.sealing import is_sealable, key_bytes


async def encode(session: AsyncSession, events: Sequence[Envelope]) -> list[str]:
    """Outbox payloads of `events`, personal fields sealed with their lead's key."""
    sealable = {event.lead_id for event in events if is_sealable(_type_of(event))}
    keys = await repository.data_keys(session, sorted(sealable)) if sealable else {}
    payloads = []
    for event in events:
        if not is_sealable(_type_of(event)):
            payloads.append(encode_event(event).decode())
            continue
        stored = keys.get(event.lead_id)
        payloads.append(seal_json(event, key_bytes(stored) if stored else None))
    return payloads


def _type_of(event: Envelope) -> str:
    return str(getattr(event, "type", ""))
