"""The merge rule: the newest non-empty value wins, blanks never erase."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from services.ingest.merge import merge_profile

FIELDS = ["name", "company", "phone", "country", "job_title"]
values = st.one_of(st.none(), st.just(""), st.just("  "), st.text(min_size=1, max_size=8))
profiles = st.fixed_dictionaries({field: values for field in FIELDS})
nested = st.fixed_dictionaries(
    {"email": st.one_of(st.none(), st.booleans()), "utm_source": values}
)


def apply(current: dict[str, Any], incoming: dict[str, Any]) -> dict[str, Any]:
    return {**current, **merge_profile(current, incoming)}


def blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


@given(profiles, profiles)
def test_blanks_never_erase_and_newest_non_blank_wins(
    current: dict[str, Any], incoming: dict[str, Any]
) -> None:
    merged = apply(current, incoming)
    for field in FIELDS:
        expected = current[field] if blank(incoming[field]) else incoming[field]
        assert merged[field] == expected


@given(profiles, profiles)
def test_changes_name_only_fields_that_differ(
    current: dict[str, Any], incoming: dict[str, Any]
) -> None:
    changes = merge_profile(current, incoming)
    assert all(current[field] != value for field, value in changes.items())
    assert merge_profile(apply(current, incoming), incoming) == {}


@given(st.booleans(), st.booleans())
def test_a_demo_request_stays_made(before: bool, now: bool) -> None:
    merged = apply({"demo_requested": before}, {"demo_requested": now})
    assert merged["demo_requested"] is (before or now)


@given(nested, nested)
def test_consent_and_attribution_merge_key_by_key(
    current: dict[str, Any], incoming: dict[str, Any]
) -> None:
    merged = apply({"consent": current}, {"consent": incoming})["consent"]
    for key in current:
        expected = current[key] if blank(incoming[key]) else incoming[key]
        assert merged[key] == expected


def test_a_consent_withdrawal_overwrites() -> None:
    assert merge_profile({"consent": {"email": True}}, {"consent": {"email": False}}) == {
        "consent": {"email": False}
    }
