"""The lead data keys a consumer of sealed events holds: fetched from ingest, kept in memory.

Ingest keeps each lead's data key (`shared.sealing`) and hands them out on an internal route,
`POST /v1/internal/lead-keys` (the admin bearer token, for now). A `KeyRing` asks for the
keys of a whole consumer batch in one request before the batch's transaction begins, and
keeps them in a bounded in-memory cache: a lead's later events cost no request. An answer
that a lead has no key (it was erased) is kept too, and `forget` drops a key when the
service applies `lead.erased`. A key that cannot be fetched (ingest unreachable) raises
`KeysUnavailableError`, an outage: the consumer retries the batch, it never skips it.

The ingest URL may name several instances, comma-separated: a request that finds one down
(killed, restarting, answering 5xx) is sent to the next at once, and the one that answered
is asked first next time, so the consumers do not wait for one ingest instance to restart.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncSession

from shared.events import Envelope, encode_event
from shared.http_transport import lean_transport
from shared.sealing import is_sealable, key_bytes, seal_document

logger = logging.getLogger(__name__)

KEYS_ROUTE = "/v1/internal/lead-keys"
KEYS_PER_REQUEST = 500


class KeysUnavailableError(ConnectionError):
    """A lead's key could not be fetched: ingest did not answer. Retried like an outage."""


class KeyRing:
    """Lead id -> data key (or None: no key, the lead is erased), fetched in batches."""

    def __init__(
        self, ingest_url: str, token: str | None, *, capacity: int = 100_000,
        timeout: float = 5.0, client: httpx.AsyncClient | None = None,
    ) -> None:
        self.urls = [url.strip().rstrip("/") + KEYS_ROUTE
                     for url in ingest_url.split(",") if url.strip()]
        """The key route of each ingest instance, the one that answered last first."""
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.capacity = capacity
        self.timeout = timeout
        self.client = client
        """The HTTP client to ingest (made at the first fetch when not given)."""
        self._keys: OrderedDict[str, bytes | None] = OrderedDict()
        self.fetches = 0
        """Requests made to ingest (for tests and metrics)."""

    async def prefetch(self, lead_ids: Iterable[str]) -> None:
        """Fetch the keys of `lead_ids` not known yet, in as few requests as possible."""
        missing = sorted({lead_id for lead_id in lead_ids if lead_id not in self._keys})
        for start in range(0, len(missing), KEYS_PER_REQUEST):
            await self._fetch(missing[start:start + KEYS_PER_REQUEST])

    def key_of(self, lead_id: str) -> bytes | None:
        """The lead's key, None when it has none; `prefetch` must have asked for it."""
        try:
            key = self._keys[lead_id]
        except KeyError:
            raise KeysUnavailableError(f"the key of lead {lead_id} was not fetched") from None
        self._keys.move_to_end(lead_id)
        return key

    def forget(self, lead_id: str) -> None:
        """The lead is erased: drop its key, and remember that it has none."""
        self._remember(lead_id, None)

    async def encode(self, _session: AsyncSession, events: Sequence[Envelope]) -> list[str]:
        """Outbox encoder: each event's JSON, its personal fields sealed with its lead's key
        (left out when the lead has no key any more)."""
        await self.prefetch(event.lead_id for event in events if is_sealable(_type_of(event)))
        return [self.seal(event) for event in events]

    def seal(self, event: Envelope) -> str:
        if not is_sealable(_type_of(event)):
            return encode_event(event).decode()
        return seal_json(event, self.key_of(event.lead_id))

    async def _fetch(self, lead_ids: list[str]) -> None:
        failures = []
        for url in list(self.urls):
            try:
                found = await self._ask(url, lead_ids)
            except (httpx.HTTPError, ValueError, KeyError, TypeError) as error:
                failures.append(type(error).__name__)
                continue
            if url != self.urls[0]:
                self.urls.remove(url)
                self.urls.insert(0, url)
            break
        else:
            raise KeysUnavailableError(
                f"lead keys not fetched from ingest: {', '.join(failures) or 'no URL'}")
        self.fetches += 1
        for lead_id in lead_ids:
            stored = found.get(lead_id)
            self._remember(lead_id, key_bytes(stored) if stored else None)

    async def _ask(self, url: str, lead_ids: list[str]) -> dict[str, str]:
        if self.client is None:
            self.client = httpx.AsyncClient(timeout=self.timeout, transport=lean_transport())
        answer = await self.client.post(url, json={"lead_ids": lead_ids}, headers=self.headers)
        if answer.status_code in (401, 403):
            # A configuration error, retried like an outage so no event is skipped, but said
            # plainly each time.
            logger.error("ingest refused the lead-key request (HTTP %d): "
                         "LEADRELAY_LEAD_KEYS_TOKEN (default: this service's first admin "
                         "token) must be one of ingest's admin tokens", answer.status_code)
        answer.raise_for_status()
        found: dict[str, str] = answer.json()["keys"]
        return found

    def _remember(self, lead_id: str, key: bytes | None) -> None:
        self._keys[lead_id] = key
        self._keys.move_to_end(lead_id)
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()


def seal_json(event: Envelope, key: bytes | None) -> str:
    """The event's outbox payload with its personal fields sealed under `key`."""
    document: dict[str, Any] = event.model_dump(mode="json")
    return json.dumps(seal_document(document, key), separators=(",", ":"))


def _type_of(event: Envelope) -> str:
    return str(getattr(event, "type", ""))
