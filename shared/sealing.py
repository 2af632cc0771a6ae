"""Personal data in events, sealed with the lead's own data key (crypto-shredding).

Kafka keeps every record it was given; an erasure cannot reach into the log. So the personal
fields of an event never enter the log readable: on the way into the outbox they are taken out
of the event and encrypted together (AES-256-GCM, the lead id as associated data) into one
`sealed` field, with the lead's data key, which only ingest stores (in the lead's row). The
erasure deletes that row, and every copy of the lead's events in the log, on any broker,
replica or backup, is unreadable from then on. The key itself never travels in the log:
consumers fetch it from ingest over HTTP (`shared.lead_keys`).

Sealed fields (`SEALED_PATHS`): a lead's email, name, phone, company and job title (a company
or a title alone rarely names a person, but the two together, or a one-person company, do),
a signal's URL and properties and the lead's referrer and landing page (a URL often carries an
email or a name in its query), and what people write about the lead (a rejection's note, the
BANT answers, the reason given for a stage change).
Country, source, segment, employee count, the account key (the company's domain) and the
scores stay readable: they are what routing and reports work on, and they name nobody.

A sealed event is schema version 2 of its type. An event whose key is gone, or that was
published without its personal fields because its key was already gone, belongs to an erased
lead: `open_document` returns None and the consumer skips it, never dead-letters it.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

PERSONAL_PROFILE_FIELDS = ("email", "name", "phone", "company", "job_title")
PERSONAL_ATTRIBUTION_FIELDS = ("referrer", "landing_page")
"""URLs: like a signal's, they often carry an email or a name in their query."""
SEALED_PATHS: dict[str, tuple[tuple[str, ...], ...]] = {
    **{
        event_type: (*(("lead", name) for name in PERSONAL_PROFILE_FIELDS),
                     *(("lead", "attribution", name) for name in PERSONAL_ATTRIBUTION_FIELDS))
        for event_type in ("lead.received", "lead.updated", "lead.scored")
    },
    "signal.recorded": (("url",), ("properties",)),
    "lead.stage_changed": (("reason",),),
    "assignment.rejected": (("note",),),
    "assignment.disqualified": (("note",),),
    "assignment.qualified": (("bant",),),
}
"""Per event type, the paths (under `data`) of the fields sealed."""

SEALED_VERSION = 2
PLAIN_VERSION = 1
"""The version of a sealed type once opened: the contract the code works with."""
_FORMAT = "a1."
_NONCE_BYTES = 12

KeyLookup = Callable[[str], bytes | None]
"""A lead id -> its data key, or None when the lead has none (erased)."""


def new_data_key() -> str:
    """A fresh 256-bit data key, as stored (URL-safe base64)."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def key_bytes(stored: str) -> bytes:
    return base64.urlsafe_b64decode(stored)


def is_sealable(event_type: str) -> bool:
    return event_type in SEALED_PATHS


def seal_document(document: dict[str, Any], key: bytes | None) -> dict[str, Any]:
    """The event's JSON document with its personal fields sealed under `key`; with no key
    (the lead is erased), with its personal fields left out. Types with nothing personal
    are returned as they are."""
    paths = SEALED_PATHS.get(document.get("type", ""))
    if paths is None:
        return document
    data = _copy_parents(document["data"], paths)
    personal: dict[str, Any] = {}
    for path in paths:
        parent = _parent(data, path)
        if parent is not None and path[-1] in parent:
            personal[".".join(path)] = parent.pop(path[-1])
    sealed = {**document, "data": data, "schema_version": SEALED_VERSION}
    if key is not None:
        plain = json.dumps(personal, separators=(",", ":")).encode()
        nonce = os.urandom(_NONCE_BYTES)
        cipher = AESGCM(key).encrypt(nonce, plain, str(document["lead_id"]).encode())
        sealed["sealed"] = _FORMAT + base64.urlsafe_b64encode(nonce + cipher).decode()
    return sealed


class BrokenSealError(ValueError):
    """Sealed fields that the lead's key, which exists, does not open: a damaged event, to be
    dead-lettered, never taken for an erased lead's."""


def open_document(document: dict[str, Any], keys: KeyLookup | None) -> dict[str, Any] | None:
    """The document with its sealed fields back in place; None when they cannot be read
    (no key: the lead is erased, or no lookup was given) and so the event is an erased lead's.
    `BrokenSealError` when the key exists and does not open them.

    Documents that are not sealed (version 1, or types with nothing personal) come back as
    they are."""
    if document.get("schema_version") != SEALED_VERSION or not is_sealable(
        str(document.get("type"))
    ):
        return document
    token = document.get("sealed")
    if keys is None or not isinstance(token, str) or not token.startswith(_FORMAT):
        return None
    lead_id = str(document.get("lead_id"))
    key = keys(lead_id)
    if key is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(token[len(_FORMAT):])
        plain = AESGCM(key).decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], lead_id.encode())
        personal = json.loads(plain)
    except (ValueError, InvalidTag) as error:
        raise BrokenSealError(f"the sealed fields of {document.get('type')} cannot be opened "
                              f"with its lead's key ({type(error).__name__})") from error
    if not isinstance(personal, dict):
        raise BrokenSealError(f"the sealed fields of {document.get('type')} are not an object")
    data = _copy_parents(document["data"], SEALED_PATHS[document["type"]])
    for dotted, value in personal.items():
        path = tuple(dotted.split("."))
        parent = _parent(data, path)
        if parent is not None:
            parent[path[-1]] = value
    opened = {name: value for name, value in document.items() if name != "sealed"}
    opened.update(data=data, schema_version=PLAIN_VERSION)
    return opened


def _copy_parents(data: dict[str, Any], paths: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    """`data` with every object on the way to a sealed field copied, so taking fields out or
    putting them back leaves the caller's document as it was."""
    copied = dict(data)
    fresh = {id(copied)}
    for path in paths:
        node = copied
        for name in path[:-1]:
            child = node.get(name)
            if not isinstance(child, dict):
                break
            if id(child) not in fresh:
                child = dict(child)
                node[name] = child
                fresh.add(id(child))
            node = child
    return copied


def _parent(data: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    node: Any = data
    for name in path[:-1]:
        node = node.get(name) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None
