"""The normaliser: examples from real forms, and properties that hold for any input."""

from __future__ import annotations

import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.normalise import (
    FREE_MAIL_DOMAINS,
    account_key_for,
    normalise_country,
    normalise_domain,
    normalise_email,
    normalise_language,
    normalise_phone,
    normalise_text,
)
from services.ingest.schemas import LeadSubmission


@pytest.mark.parametrize(
    ("typed", "country", "expected"),
    [
        ("+49 (30) 1234-5678", None, "+493012345678"),
        ("030 1234 5678", "DE", "+493012345678"),
        ("06 12 34 56 78", "FR", "+33612345678"),
        ("(281) 332-2575", "US", "+12813322575"),
        ("15550000000", None, "+15550000000"),
    ],
)
def test_phone_becomes_e164_read_in_the_country(
    typed: str, country: str | None, expected: str
) -> None:
    assert normalise_phone(typed, country) == expected


@pytest.mark.parametrize(
    ("typed", "expected"),
    [("FR", "FR"), ("fr", "FR"), ("FRA", "FR"), ("France", "FR"), (" germany ", "DE"),
     ("United States", "US"), ("UK", "GB")],
)
def test_country_becomes_alpha2(typed: str, expected: str) -> None:
    assert normalise_country(typed) == expected


@pytest.mark.parametrize("typed", ["Atlantis", "xx", "", "123"])
def test_unknown_country_is_refused(typed: str) -> None:
    with pytest.raises(ValueError, match="country"):
        normalise_country(typed)


@pytest.mark.parametrize(
    ("typed", "expected"),
    [("https://www.Acme.com/about?x=1", "acme.com"), ("acme.co.uk", "acme.co.uk"),
     ("http://shop.acme.io:8080", "shop.acme.io"), ("WWW.ACME.FR.", "acme.fr")],
)
def test_website_becomes_its_domain(typed: str, expected: str) -> None:
    assert normalise_domain(typed) == expected


@pytest.mark.parametrize("typed", ["not a site", "http://", "localhost", "acme"])
def test_website_without_domain_is_refused(typed: str) -> None:
    with pytest.raises(ValueError):
        normalise_domain(typed)


def test_language_accepts_codes_tags_and_names() -> None:
    assert [normalise_language(value) for value in ("fr", "fr-FR", "French", "eng", "DE")] == [
        "fr", "fr", "fr", "en", "de"
    ]


def test_company_domain_comes_from_work_email_else_website() -> None:
    assert account_key_for("ada@acme.io") == "acme.io"
    assert account_key_for("ada@gmail.com") is None
    assert account_key_for("ada@gmail.com", "acme.io") == "acme.io"


def test_submission_normalises_every_field() -> None:
    lead = LeadSubmission.model_validate({
        "email": " Zoe.ONeil+leads@Example.COM ", "first_name": " Zoë ", "last_name": "O'Neil",
        "country": "Germany", "phone": "030 1234 5678", "website": "https://www.acme.de/",
        "language": "de-DE", "unknown_field": "dropped",
        "consent": {"email": True, "legal_basis": "Legitimate interests"},
        "attribution": {"landing_page": "https://acme.de/demo?utm_source=linkedin&utm_medium=paid"},
    }).profile(source="website", attribution={"channel": "paid-social"})
    assert lead["email"] == "zoe.oneil+leads@example.com"
    assert lead["name"] == "Zoë O'Neil"
    assert (lead["country"], lead["phone"]) == ("DE", "+493012345678")
    assert (lead["website"], lead["language"]) == ("acme.de", "de")
    assert lead["account_key"] == "example.com"
    assert lead["consent"]["legal_basis"] == "legitimate_interests"
    assert lead["attribution"]["utm_source"] == "linkedin"
    assert lead["attribution"]["channel"] == "paid-social"
    assert "unknown_field" not in lead and "first_name" not in lead


local_parts = st.text(
    string.ascii_letters + string.digits + "._+-", min_size=1, max_size=20
).filter(lambda part: not part.startswith(".") and not part.endswith(".") and ".." not in part)
domains = st.sampled_from(
    ["example.com", "Acme.IO", "mail.acme.co.uk", *sorted(FREE_MAIL_DOMAINS)[:5]]
)


@given(local=local_parts, domain=domains, padding=st.sampled_from(["", " ", "\t"]))
def test_email_normalisation_is_idempotent_and_lower_case(
    local: str, domain: str, padding: str
) -> None:
    email = normalise_email(f"{padding}{local}@{domain}{padding}")
    assert email == email.lower() == normalise_email(email)
    assert email.endswith("@" + domain.lower())


@given(st.text(max_size=60))
def test_text_normalisation_is_idempotent(value: str) -> None:
    once = normalise_text(value)
    assert normalise_text(once) == once
    assert once == once.strip() and "  " not in once and "\n" not in once


@given(st.sampled_from(["FR", "DE", "US", "GB", "IT", "ES", "BE", "CH"]), st.integers(0, 10**9))
def test_phone_normalisation_is_idempotent(country: str, digits: int) -> None:
    try:
        once = normalise_phone(str(digits), country)
    except ValueError:
        return
    assert once.startswith("+")
    assert normalise_phone(once) == once == normalise_phone(once, country)


@given(st.text(max_size=30))
def test_country_normalisation_gives_alpha2_or_refuses(value: str) -> None:
    try:
        code = normalise_country(value)
    except ValueError:
        return
    assert len(code) == 2 and code.isupper()
    assert normalise_country(code) == code


@given(
    st.sampled_from(["", "http://", "https://www.", "HTTPS://"]),
    st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]\.(com|io|fr|co\.uk)", fullmatch=True),
    st.sampled_from(["", "/", "/path?q=1", ":8080/"]),
)
def test_website_normalisation_is_idempotent(scheme: str, host: str, tail: str) -> None:
    domain = normalise_domain(f"{scheme}{host}{tail}")
    assert domain == host.removeprefix("www.")
    assert normalise_domain(domain) == domain
