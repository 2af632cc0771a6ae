"""HubSpot's CRM API as the contact fetch uses it: one contact read, its answer classified.

`GET {base}/crm/v3/objects/contacts/{id}?properties=a,b,...` with `Authorization: Bearer
<private app token>` (scope `crm.objects.contacts.read`). What HubSpot answers, and what
becomes of the fetch:
- `200` `{"id", "properties": {name: text or null}, "createdAt", "updatedAt", "archived"}`:
  the contact (`Fetched`);
- `404` (no such contact: deleted, merged away, another account's id) and any other `4xx`:
  final (`Failed`);
- `429` (`{"status": "error", "errorType": "RATE_LIMIT", "policyName": "SECONDLY"|"DAILY"...}`):
  tried again after `Retry-After` (seconds or an HTTP date), else after the back-off;
- `401` (token unknown or revoked, `category: INVALID_AUTHENTICATION`) and `403` (a scope
  missing): tried again with the back-off, so fixing the source's token lets waiting fetches
  complete; `5xx`, network errors and timeouts: tried again with the back-off.
The URL goes through the outbound guard (`shared.outbound`): only public addresses, unless
`LEADRELAY_WEBHOOK_ALLOWED_URLS` lists it. Errors are told by status, HubSpot's category and
message, never with the token or the contact's properties.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlencode

import httpx

from shared import outbound
from shared.outbound import DestinationPolicy, RefusedDestinationError

PROPERTY_NAME = re.compile(r"^[a-z0-9_]{1,100}$")
"""HubSpot's internal property names: lower-case letters, digits and underscores."""
MAX_ERROR_CHARS = 300


@dataclass(frozen=True)
class Fetched:
    properties: dict[str, Any]
    raw: bytes
    """The answer's body as received."""


@dataclass(frozen=True)
class Retry:
    error: str
    after_seconds: float | None = None
    """HubSpot's `Retry-After`; None: the fetch's own back-off."""


@dataclass(frozen=True)
class Failed:
    error: str


Outcome = Fetched | Retry | Failed


def contact_url(base_url: str, contact_id: str, properties: Iterable[str]) -> str:
    names = sorted({name for name in properties if PROPERTY_NAME.match(name)})
    query = urlencode({"properties": ",".join(names)})
    return f"{base_url.rstrip('/')}/crm/v3/objects/contacts/{contact_id}?{query}"


async def fetch_contact(
    client: httpx.AsyncClient, destinations: DestinationPolicy, *, url: str, token: str,
    time_limit: float, now: datetime,
) -> Outcome:
    """Read one contact within `time_limit` seconds; every way it can end is an `Outcome`,
    never an exception."""
    try:
        destination = await destinations.check(url)
    except RefusedDestinationError as error:
        return Failed(f"the CRM URL is refused: {error}")
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    try:
        async with asyncio.timeout(time_limit):
            response = await outbound.get(client, destination, headers=headers)
    except TimeoutError:
        return Retry(f"HubSpot did not answer within {time_limit:g} s")
    except httpx.HTTPError as error:
        return Retry(f"cannot reach HubSpot: {type(error).__name__}")
    return classify(response, now)


def classify(response: httpx.Response, now: datetime) -> Outcome:
    status = response.status_code
    if status == 200:
        try:
            document = response.json()
        except ValueError:
            return Retry("HubSpot answered 200 with a body that is not JSON")
        properties = document.get("properties") if isinstance(document, dict) else None
        if not isinstance(properties, dict):
            return Failed("HubSpot answered 200 without the contact's properties")
        return Fetched(properties=properties, raw=response.content)
    error = f"HubSpot answered {status}{_described(response)}"
    if status == 429:
        return Retry(error, retry_after_seconds(response.headers.get("retry-after"), now))
    if status in (401, 403) or status >= 500:
        return Retry(error)
    return Failed(error)


def retry_after_seconds(value: str | None, now: datetime) -> float | None:
    """`Retry-After` as seconds from `now` (it is either seconds or an HTTP date)."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


def _described(response: httpx.Response) -> str:
    """HubSpot's error category and message, as its error bodies give them."""
    try:
        body = json.loads(response.content)
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    kind = body.get("category") or body.get("errorType")
    parts = [str(part) for part in (kind, body.get("policyName")) if part]
    message = body.get("message")
    described = (f" {' '.join(parts)}" if parts else "") + (f": {message}" if message else "")
    return described[:MAX_ERROR_CHARS]
