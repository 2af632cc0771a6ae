"""Pure functions that turn what people type into canonical lead fields.

Each `normalise_*` function is idempotent (normalising its own output gives the same value)
and raises `ValueError` with a message fit for a 422 when the value cannot be understood.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlsplit

import phonenumbers
import pycountry
from email_validator import EmailNotValidError, validate_email

FREE_MAIL_DOMAINS = frozenset(
    {
        "gmail.com", "googlemail.com", "yahoo.com", "yahoo.fr", "yahoo.co.uk", "hotmail.com",
        "hotmail.fr", "outlook.com", "outlook.fr", "live.com", "msn.com", "icloud.com", "me.com",
        "mac.com", "aol.com", "proton.me", "protonmail.com", "gmx.com", "gmx.de", "gmx.net",
        "web.de", "t-online.de", "orange.fr", "wanadoo.fr", "free.fr", "sfr.fr", "laposte.net",
        "yandex.ru", "mail.ru", "qq.com", "163.com", "126.com", "zoho.com", "hey.com",
    }
)

COUNTRY_ALIASES = {"UK": "GB", "ENGLAND": "GB", "SCOTLAND": "GB", "WALES": "GB",
                   "RUSSIA": "RU", "SOUTH KOREA": "KR", "KOREA": "KR", "USA": "US"}

LEGAL_BASES = frozenset(
    {"consent", "contract", "legal_obligation", "vital_interests", "public_task",
     "legitimate_interests"}
)
"""The six lawful bases of GDPR article 6."""

UTM_FIELDS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")

_SPACES = re.compile(r"\s+")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN = re.compile(rf"^(?=.{{1,253}}$)(?:{_LABEL}\.)+[a-z][a-z0-9-]{{1,62}}$")


def normalise_email(value: str) -> str:
    """Lower-cased, syntax-checked address (no DNS look-up)."""
    return _normalised_email(value)


@functools.lru_cache(maxsize=4096)
def _normalised_email(value: str) -> str:
    # Cached: a campaign's signals name the same few thousand addresses over and over, and
    # checking one costs more than storing its signal. Only this process's memory holds them.
    try:
        checked = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError as error:
        raise ValueError(str(error)) from None
    return checked.normalized.lower()


def normalise_text(value: str) -> str:
    """Trimmed, with runs of whitespace (newlines included) collapsed to one space."""
    return _SPACES.sub(" ", value).strip()


def normalise_country(value: str) -> str:
    """ISO 3166-1 alpha-2 code from a code (`fr`, `FRA`) or an English name (`France`)."""
    text = normalise_text(value)
    alias = COUNTRY_ALIASES.get(text.upper())
    if alias:
        return alias
    try:
        country = pycountry.countries.lookup(text)
    except LookupError:
        raise ValueError(
            f"unknown country {text[:60]!r}: give an ISO 3166 code such as 'FR' or a name"
        ) from None
    code: str = country.alpha_2
    return code


def normalise_phone(value: str, country: str | None = None) -> str:
    """E.164 (`+33612345678`); national numbers are read in the lead's country.

    Without a country, a number that does not start with `+` is read as international
    (`15550000000` is `+15550000000`), which is how form tools send numbers as digits.
    """
    text = normalise_text(value)
    candidate = text if country or text.startswith("+") else f"+{text}"
    try:
        number = phonenumbers.parse(candidate, country)
    except phonenumbers.NumberParseException:
        raise ValueError("not a phone number") from None
    if not phonenumbers.is_possible_number(number):
        raise ValueError("not a possible phone number for its country")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_domain(value: str) -> str:
    """The bare host of a website address: `https://www.Acme.com/about` becomes `acme.com`."""
    text = normalise_text(value).lower()
    host = urlsplit(text if "//" in text else f"//{text}").hostname or ""
    host = host.rstrip(".").removeprefix("www.")
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError("not a website address") from None
    if not _DOMAIN.match(host):
        raise ValueError("not a website address")
    return host


def normalise_language(value: str) -> str:
    """ISO 639-1 code in lower case from `fr`, `fr-FR`, `fra` or `French`."""
    text = normalise_text(value).replace("_", "-").split("-")[0]
    try:
        language = pycountry.languages.lookup(text)
    except LookupError:
        raise ValueError(f"unknown language {text[:40]!r}") from None
    code: str | None = getattr(language, "alpha_2", None)
    if code is None:
        raise ValueError(f"language {text[:40]!r} has no two-letter ISO 639-1 code")
    return code


def normalise_legal_basis(value: str) -> str:
    basis = normalise_text(value).lower().replace(" ", "_").replace("-", "_")
    if basis not in LEGAL_BASES:
        raise ValueError(f"legal basis must be one of {', '.join(sorted(LEGAL_BASES))}")
    return basis


def full_name(first: str | None, last: str | None) -> str | None:
    joined = normalise_text(f"{first or ''} {last or ''}")
    return joined or None


def company_domain(email: str) -> str | None:
    """The domain of a work address, or None for free-mail providers."""
    domain = email.rsplit("@", 1)[-1]
    return None if domain in FREE_MAIL_DOMAINS else domain


def account_key_for(email: str, website: str | None = None) -> str | None:
    """The key shared by leads of one company: the email's domain, else the website's."""
    return company_domain(email) or website


def utm_from_url(url: str | None) -> dict[str, str]:
    """The UTM parameters carried in a landing page's query string."""
    if not url:
        return {}
    query = dict(parse_qsl(urlsplit(url).query))
    return {field: query[field] for field in UTM_FIELDS if query.get(field)}


def is_blank(value: object) -> bool:
    """Blank values never overwrite what is known: None, empty or whitespace-only text, {}."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, Mapping) and all(is_blank(item) for item in value.values())
