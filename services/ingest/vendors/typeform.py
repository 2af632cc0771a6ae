"""Typeform `form_response`: answers keyed by their question's `ref` (and id), hidden fields.

Typeform signs the body (no timestamp). The response token, unique per submission, is the
replay key. An `email` answer is the lead's email and a `phone_number` answer its phone, unless
the source maps a question ref elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from services.ingest.signatures import verify_typeform
from services.ingest.vendors import Delivery, Entry, PayloadError, json_body, json_object

ANSWER_BY_TYPE = {"email": "email", "phone_number": "phone"}


def verify(delivery: Delivery, secrets: Sequence[str], now: datetime) -> None:
    signature = delivery.headers.get("typeform-signature")
    verify_typeform(secrets, body=delivery.body, signature=signature)


def entries(delivery: Delivery) -> list[Entry]:
    response = json_object(json_object(json_body(delivery), "the body").get("form_response"),
                           "form_response")
    fields: dict[str, Any] = {}
    hidden = response.get("hidden")
    if isinstance(hidden, dict):
        fields.update(hidden)
    answers = response.get("answers") or []
    if not isinstance(answers, list):
        raise PayloadError("form_response.answers is not a list")
    refs = _refs_by_id(response.get("definition"))
    for answer in answers:
        if not isinstance(answer, dict) or not isinstance(answer.get("field"), dict):
            continue
        value = _answer_value(answer)
        question = answer["field"]
        if answer.get("type") in ANSWER_BY_TYPE:
            fields.setdefault(ANSWER_BY_TYPE[answer["type"]], value)
        ref = question.get("ref") or refs.get(question.get("id"))
        for key in (ref, question.get("id")):
            if isinstance(key, str):
                fields[key] = value
    token = response.get("token")
    external_id = f"{response.get('form_id')}:{token}" if token else None
    return [Entry(external_id=external_id, fields=fields)]


def _answer_value(answer: dict[str, Any]) -> Any:
    kind = answer.get("type")
    value = answer.get(kind) if isinstance(kind, str) else None
    if kind == "choice" and isinstance(value, dict):
        return value.get("label") or value.get("other")
    if kind == "choices" and isinstance(value, dict):
        return ", ".join(str(label) for label in value.get("labels") or [])
    return value


def _refs_by_id(definition: Any) -> dict[Any, str]:
    """Question id -> ref, from the form definition (older payloads omit refs on answers)."""
    questions = definition.get("fields") if isinstance(definition, dict) else None
    return {
        question.get("id"): question["ref"]
        for question in questions or []
        if isinstance(question, dict) and isinstance(question.get("ref"), str)
    }
