"""Types for what clients send, strict where pydantic's lax mode would guess.

Lax pydantic reads `0` or `"0.5"` as a date-time (seconds since 1970) and `0`/`1` as booleans;
a client that sends them has made a mistake, so they are a `422`. Integers that reach a
database column are bounded by what every supported database stores (`DB_INTEGER_MAX`, a
32-bit column on PostgreSQL), or tighter.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated

from pydantic import AwareDatetime, BeforeValidator, StrictBool

DB_INTEGER_MAX = 2**31 - 1
"""The largest value of an `Integer` column on PostgreSQL (SQLite's is 2**63 - 1)."""

_ISO_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _date_time_text(value: object) -> object:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and _ISO_DATE_TIME.match(value.strip()):
        return value
    raise ValueError("must be an ISO 8601 date-time with its offset, such as "
                     "2026-01-05T09:00:00Z")


DateTimeText = Annotated[AwareDatetime, BeforeValidator(_date_time_text)]
"""A date-time with its UTC offset, written as ISO 8601 text; never a number."""

Flag = StrictBool
"""`true` or `false`; never `0`, `1` or a string."""


def _not_a_flag(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("must be a number, not true or false")
    return value


NotAFlag = BeforeValidator(_not_a_flag)
"""For a number: `true` and `false` are refused, where lax pydantic reads them as 1 and 0."""
