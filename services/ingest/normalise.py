"""Pure functions that turn what people type into canonical lead fields."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email

FREE_MAIL_DOMAINS = frozenset(
    {
        "gmail.com", "googlemail.com", "yahoo.com", "yahoo.fr", "hotmail.com", "hotmail.fr",
        "outlook.com", "live.com", "msn.com", "icloud.com", "me.com", "aol.com", "proton.me",
        "protonmail.com", "gmx.com", "gmx.de", "web.de", "orange.fr", "free.fr", "laposte.net",
        "yandex.ru", "mail.ru", "qq.com", "163.com",
    }
)


def normalise_email(value: str) -> str:
    """Lower-cased, syntax-checked address (no DNS look-up). Raises ValueError when invalid."""
    try:
        checked = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError as error:
        raise ValueError(str(error)) from None
    return checked.normalized.lower()


def normalise_country(value: str) -> str:
    """An ISO 3166 alpha-2 code in upper case. Raises ValueError for anything else."""
    code = value.strip().upper()
    if len(code) != 2 or not code.isalpha():
        raise ValueError("country must be an ISO 3166-1 alpha-2 code such as 'FR'")
    return code


def account_key_for(email: str) -> str | None:
    """The company domain a lead belongs to, or None for free-mail addresses."""
    domain = email.rsplit("@", 1)[-1]
    return None if domain in FREE_MAIL_DOMAINS else domain
