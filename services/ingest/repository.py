"""All of ingest's queries.

The statements every submission runs are built once, with bind parameters: building one per
call (and its cache key) costs SQLAlchemy more than executing it on SQLite.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.engine import CursorResult, Result, RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from services.ingest.models import crm_fetch, idempotency_key, lead, source, submission

_LEAD_BY_EMAIL_FOR_UPDATE = select(lead).where(lead.c.email == bindparam("email")).with_for_update()
_LEADS_BY_EMAIL_FOR_UPDATE = (
    select(lead).where(lead.c.email.in_(bindparam("emails", expanding=True)))
    .order_by(lead.c.email).with_for_update()
)
_INSERT_LEAD = insert(lead)
_UPDATE_LEAD = update(lead).where(lead.c.id == bindparam("lead_id"))
_REWRITTEN_COLUMNS = [column.name for column in lead.c if column.name not in {"id", "created_at"}]
_INSERT_SUBMISSION = insert(submission)
_DATA_KEYS = select(lead.c.id, lead.c.data_key).where(
    lead.c.id.in_(bindparam("lead_ids", expanding=True)))


def _rowcount(result: Result[Any]) -> int:
    return int(cast(CursorResult[Any], result).rowcount)


async def find_lead(session: AsyncSession, lead_id: str) -> RowMapping | None:
    result = await session.execute(select(lead).where(lead.c.id == lead_id))
    return result.mappings().first()


async def find_lead_by_email_for_update(session: AsyncSession, email: str) -> RowMapping | None:
    result = await session.execute(_LEAD_BY_EMAIL_FOR_UPDATE, {"email": email})
    return result.mappings().first()


async def find_leads_by_email_for_update(
    session: AsyncSession, emails: Sequence[str]
) -> dict[str, RowMapping]:
    """The leads of `emails` that exist, by email, locked in email order."""
    result = await session.execute(_LEADS_BY_EMAIL_FOR_UPDATE, {"emails": list(emails)})
    return {row["email"]: row for row in result.mappings().all()}


_KEYS_WRITTEN = "ingest.data_keys_written"
"""`session.info` key: the data keys of the leads this transaction inserted, by lead id, so
that sealing their events needs no query (`data_keys`)."""


def _remember_keys(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    written: dict[str, str] = session.info.setdefault(_KEYS_WRITTEN, {})
    written.update((row["id"], row["data_key"]) for row in rows if row.get("data_key"))


async def insert_lead(session: AsyncSession, values: Mapping[str, Any]) -> None:
    await session.execute(_INSERT_LEAD, dict(values))
    _remember_keys(session, [values])


async def insert_leads(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert several leads in one statement (every row gets every column)."""
    await session.execute(_INSERT_LEAD, [_full_row(row) for row in rows])
    _remember_keys(session, rows)


async def update_leads(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write the whole current state of several leads in one statement."""
    await session.execute(
        _UPDATE_LEAD,
        [{**{name: row.get(name) for name in _REWRITTEN_COLUMNS}, "lead_id": row["id"]}
         for row in rows],
    )


def _full_row(row: Mapping[str, Any]) -> dict[str, Any]:
    return {column.name: row.get(column.name) for column in lead.c}


async def update_lead(session: AsyncSession, lead_id: str, values: Mapping[str, Any]) -> None:
    await session.execute(_UPDATE_LEAD, {**values, "lead_id": lead_id})


async def record_submission(
    session: AsyncSession,
    *,
    lead_id: str | None,
    channel: str,
    source_key: str | None,
    external_id: str | None,
    payload: Mapping[str, Any],
    raw: str | None,
    received_at: datetime,
    delivery_id: str | None = None,
    delivery_part: int | None = None,
) -> None:
    await session.execute(_INSERT_SUBMISSION, {
        "lead_id": lead_id, "channel": channel, "source_key": source_key,
        "external_id": external_id, "payload": dict(payload), "raw": raw,
        "received_at": received_at, "delivery_id": delivery_id, "delivery_part": delivery_part,
    })


async def record_submissions(session: AsyncSession, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert several submissions (the keyword arguments of `record_submission`) at once."""
    await session.execute(_INSERT_SUBMISSION, [
        {"lead_id": row["lead_id"], "channel": row["channel"], "source_key": row["source_key"],
         "external_id": row["external_id"], "payload": dict(row["payload"]), "raw": row["raw"],
         "received_at": row["received_at"], "delivery_id": row.get("delivery_id"),
         "delivery_part": row.get("delivery_part")}
        for row in rows
    ])


@dataclass(frozen=True)
class EarlierSubmission:
    """A submission a source already sent under an external id."""

    lead_id: str | None
    """The lead it went to; None when it named no lead."""


async def find_submission(
    session: AsyncSession, source_key: str, external_id: str
) -> EarlierSubmission | None:
    found = (await session.execute(
        select(submission.c.lead_id).where(
            submission.c.source_key == source_key, submission.c.external_id == external_id
        ).limit(1)
    )).first()
    return None if found is None else EarlierSubmission(found.lead_id)


async def purge_submissions(session: AsyncSession, received_before: datetime) -> int:
    result = await session.execute(
        delete(submission).where(submission.c.received_at < received_before)
    )
    return _rowcount(result)


async def find_source(session: AsyncSession, key: str) -> RowMapping | None:
    result = await session.execute(select(source).where(source.c.key == key))
    return result.mappings().first()


async def list_sources(session: AsyncSession) -> list[RowMapping]:
    result = await session.execute(select(source).order_by(source.c.key))
    return list(result.mappings().all())


async def save_source(
    session: AsyncSession, key: str, kind: str, config: Mapping[str, Any], now: datetime
) -> bool:
    """Insert or replace a source; True when it is new."""
    updated = await session.execute(
        update(source).where(source.c.key == key).values(kind=kind, config=dict(config),
                                                          updated_at=now)
    )
    if _rowcount(updated):
        return False
    await session.execute(
        insert(source).values(key=key, kind=kind, config=dict(config), created_at=now,
                              updated_at=now)
    )
    return True


async def delete_source(session: AsyncSession, key: str) -> bool:
    result = await session.execute(delete(source).where(source.c.key == key))
    return _rowcount(result) > 0


async def find_idempotent_response(
    session: AsyncSession, scope: str, key: str
) -> RowMapping | None:
    result = await session.execute(
        select(idempotency_key).where(idempotency_key.c.scope == scope,
                                      idempotency_key.c.key == key)
    )
    return result.mappings().first()


async def save_idempotent_response(
    session: AsyncSession, *, scope: str, key: str, request_hash: str, status_code: int,
    response: Any, now: datetime,
) -> None:
    await session.execute(
        insert(idempotency_key).values(
            scope=scope, key=key, request_hash=request_hash, status_code=status_code,
            response=response, created_at=now,
        )
    )


async def purge_idempotency_keys(session: AsyncSession, created_before: datetime) -> int:
    result = await session.execute(
        delete(idempotency_key).where(idempotency_key.c.created_at < created_before)
    )
    return _rowcount(result)


async def erase_lead(session: AsyncSession, lead_id: str) -> None:
    """Delete the lead's row (its data key with it), every submission of it and the CRM
    fetches that made or updated it."""
    await session.execute(delete(submission).where(submission.c.lead_id == lead_id))
    await session.execute(delete(crm_fetch).where(crm_fetch.c.lead_id == lead_id))
    await session.execute(delete(lead).where(lead.c.id == lead_id))


async def data_keys(session: AsyncSession, lead_ids: Sequence[str]) -> dict[str, str]:
    """The data keys of those of `lead_ids` that exist (an erased lead has none); those of
    leads this transaction inserted without a query."""
    written: dict[str, str] = session.info.get(_KEYS_WRITTEN, {})
    found = {lead_id: written[lead_id] for lead_id in lead_ids if lead_id in written}
    missing = [lead_id for lead_id in lead_ids if lead_id not in written]
    if missing:
        result = await session.execute(_DATA_KEYS, {"lead_ids": missing})
        found.update((lead_id, key) for lead_id, key in result if key is not None)
    return found


async def deliveries_of_lead(session: AsyncSession, lead_id: str) -> dict[str, set[int]]:
    """delivery id -> the parts of it that are this lead's submissions."""
    result = await session.execute(
        select(submission.c.delivery_id, submission.c.delivery_part).where(
            submission.c.lead_id == lead_id, submission.c.delivery_id.is_not(None)))
    parts: dict[str, set[int]] = {}
    for delivery_id, part in result:
        parts.setdefault(delivery_id, set()).add(-1 if part is None else part)
    return parts


def _others_of_delivery(delivery_id: str, lead_id: str) -> Any:
    return (submission.c.delivery_id == delivery_id) & (
        submission.c.lead_id.is_(None) | (submission.c.lead_id != lead_id))


async def raw_of_delivery(session: AsyncSession, delivery_id: str, lead_id: str) -> str | None:
    """The raw body other submissions (not `lead_id`'s) keep of this delivery, if any do."""
    result = await session.execute(
        select(submission.c.raw).where(_others_of_delivery(delivery_id, lead_id)).limit(1))
    found = result.first()
    return None if found is None else cast(str | None, found.raw)


async def replace_raw_of_delivery(
    session: AsyncSession, delivery_id: str, lead_id: str, raw: str | None
) -> None:
    await session.execute(
        update(submission).where(_others_of_delivery(delivery_id, lead_id)).values(raw=raw))
