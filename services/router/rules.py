"""Routing rules: an ordered list, first match wins. Parsing and matching are pure.

A rule set is written in YAML (or sent as JSON to `PUT /v1/rules`)::

    rules:
      - id: enterprise-fr
        when:
          country: [FR, BE]                 # one of
          employee_count: {gte: 1000}       # comparisons: eq, ne, gt, gte, lt, lte, in, not_in
          temperature: hot                  # equal
          account_key: {exists: true}
        pool: Enterprise EMEA               # a team's name
        strategy: weighted_fairness         # round_robin | weighted_fairness | least_loaded
                                            # | account_owner
        fallback_pool: SDR pool
        handoff_pool: AE EMEA               # where a qualified lead goes (AEs)
        sla: {accept_seconds: 120, contact_seconds: 300}

    segments:                               # optional; these are the defaults
      - {name: smb, min_employees: 0}
      - {name: mid-market, min_employees: 200}
      - {name: enterprise, min_employees: 1000}

Conditions look at the lead's `temperature`, `score`, `stage`, `segment`, its profile fields
(`country`, `language`, `source`, `employee_count`, `industry`...) and its attribution
(`channel`, `campaign`, `utm_source`...): `CONDITIONS` lists them all. A condition on any
other name, an unknown operator, a comparison (`gt`...) on a field that is not a number or a
temperature or stage that does not exist is refused (422 naming it), since it would never
match. Rule sets stored before these checks still load (`model_validate(..., context=STORED)`).
A lead's segment is its own `segment` field when it has one, else the band its employee count
falls in; a rep who declares segments only gets leads of those segments. A rule with no `when`
matches every lead. Each stored set gets the next version number; every decision records the
version it used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from services.router.routing import ATTRIBUTION_FIELDS, LeadFacts, Strategy, segment_of
from shared.events import LeadProfile, Stage, Temperature

Operator = Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "exists"]
OPERATORS: frozenset[str] = frozenset(Operator.__args__)  # type: ignore[attr-defined]
COMPARISONS = frozenset({"gt", "gte", "lt", "lte"})
NUMERIC_CONDITIONS = frozenset({"score", "employee_count", "annual_revenue"})
CHOICES: dict[str, frozenset[str]] = {
    "temperature": frozenset(Temperature.__args__),  # type: ignore[attr-defined]
    "stage": frozenset(Stage.__args__),  # type: ignore[attr-defined]
}
CONDITIONS: frozenset[str] = frozenset(
    {"temperature", "score", "stage", "segment"}
    | (set(LeadProfile.model_fields) - {"consent", "attribution"})
    | ATTRIBUTION_FIELDS
)
"""The names a rule's `when` may test."""
STORED = {"stored": True}
"""Validation context of a rule set read back from the database: checked when it was
stored, by the rules of that day, so only its shape is checked again."""


def condition_problems(name: str, condition: Any) -> list[str]:
    """Why a condition of a rule's `when` could never do what it says (empty: it can)."""
    if name not in CONDITIONS:
        return [f"unknown condition {name!r}; a rule may test {', '.join(sorted(CONDITIONS))}"]
    tests = dict(condition) if isinstance(condition, Mapping) else {
        "in" if isinstance(condition, list) else "eq": condition}
    problems: list[str] = []
    for operator, expected in tests.items():
        if operator not in OPERATORS:
            problems.append(f"{name}: unknown operator {operator!r}; one of "
                            f"{', '.join(sorted(OPERATORS))}")
            continue
        values = expected if isinstance(expected, list) else [expected]
        if operator == "exists":
            if not isinstance(expected, bool):
                problems.append(f"{name}: `exists` takes true or false")
        elif operator in COMPARISONS or name in NUMERIC_CONDITIONS:
            if name not in NUMERIC_CONDITIONS:
                problems.append(f"{name}: `{operator}` compares numbers, and {name} is not one")
            elif not all(isinstance(value, int | float) and not isinstance(value, bool)
                         for value in values):
                problems.append(f"{name}: {expected!r} is not a number")
        elif name in CHOICES:
            wrong = [value for value in values if str(value).lower() not in CHOICES[name]]
            if wrong:
                problems.append(f"{name}: {wrong!r} is not one of "
                                f"{', '.join(sorted(CHOICES[name]))}")
    return problems

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


MAX_SLA_SECONDS = 30 * 86_400
"""A deadline further than a month away is a mistake (and past a year, a date overflow)."""


class SlaPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    accept_seconds: float = Field(gt=0, le=MAX_SLA_SECONDS, allow_inf_nan=False)
    contact_seconds: float = Field(gt=0, le=MAX_SLA_SECONDS, allow_inf_nan=False)


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
    when: dict[str, Any] = Field(default_factory=dict)
    pool: Name | None = None
    """A team name; None: every rep of the role."""
    strategy: Strategy = "round_robin"
    fallback_pool: Name | None = None
    handoff_pool: Name | None = None
    sla: SlaPolicy | None = None
    outside_hours: Literal["hold", "follow_the_sun"] = "hold"
    """Nobody in the pools working now: keep the lead until someone is, the accept clock
    holding outside the rep's (else their team's) hours (`hold`), or try the
    `follow_the_sun` pools whose team works now by the team's hours."""
    follow_the_sun: list[Name] = Field(default_factory=list)

    @field_validator("when")
    @classmethod
    def _valid_conditions(cls, when: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        stored = bool(info.context and info.context.get("stored"))
        for name, condition in when.items():
            if stored:
                if isinstance(condition, Mapping) and set(condition) - OPERATORS:
                    raise ValueError(f"{name}: unknown operators {sorted(condition)}")
                continue
            problems = condition_problems(name, condition)
            if problems:
                raise ValueError("; ".join(problems))
        return when


class SegmentBand(BaseModel):
    """Leads with at least `min_employees` employees (and fewer than the next band's)."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, StringConstraints(strip_whitespace=True, to_lower=True, min_length=1,
                                           max_length=200)]
    min_employees: int = Field(ge=0, le=10_000_000)


DEFAULT_SEGMENTS = (
    SegmentBand(name="smb", min_employees=0),
    SegmentBand(name="mid-market", min_employees=200),
    SegmentBand(name="enterprise", min_employees=1000),
)


class RuleSet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[Rule] = Field(max_length=500)
    segments: list[SegmentBand] = Field(default_factory=lambda: list(DEFAULT_SEGMENTS),
                                        max_length=50)

    @field_validator("segments")
    @classmethod
    def _distinct_bands(cls, bands: list[SegmentBand]) -> list[SegmentBand]:
        if len({band.name for band in bands}) != len(bands):
            raise ValueError("segment names must be unique")
        if len({band.min_employees for band in bands}) != len(bands):
            raise ValueError("two segments cannot start at the same employee count")
        return bands

    def segment_of(self, employee_count: int | None) -> str | None:
        return segment_of(employee_count, [(band.name, band.min_employees)
                                           for band in self.segments])

    @field_validator("rules")
    @classmethod
    def _unique_ids(cls, rules: list[Rule]) -> list[Rule]:
        ids = [rule.id for rule in rules]
        if len(set(ids)) != len(ids):
            raise ValueError("rule ids must be unique")
        return rules

    def pools(self) -> set[str]:
        return {
            name
            for rule in self.rules
            for name in (rule.pool, rule.fallback_pool, rule.handoff_pool, *rule.follow_the_sun)
            if name is not None
        }


DEFAULT_RULE = Rule(id="default")
"""Used when no rule set was stored, or none matches: every SDR, round robin."""

QUEUE_CLAIM_RULE_ID = "shared-queue"
"""The `rule_id` of an assignment made by a claim from a team's shared queue."""


def _normalise(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


def _compare(operator: str, actual: Any, expected: Any) -> bool:
    if operator == "exists":
        return (actual is not None) == bool(expected)
    if operator in ("in", "not_in"):
        options = expected if isinstance(expected, Sequence) and not isinstance(
            expected, str) else [expected]
        found = _normalise(actual) in {_normalise(option) for option in options}
        return found if operator == "in" else not found
    if operator == "eq":
        return bool(_normalise(actual) == _normalise(expected))
    if operator == "ne":
        return bool(_normalise(actual) != _normalise(expected))
    if actual is None:
        return False
    try:
        if operator == "gt":
            return bool(actual > expected)
        if operator == "gte":
            return bool(actual >= expected)
        if operator == "lt":
            return bool(actual < expected)
        return bool(actual <= expected)
    except TypeError:
        return False


def condition_holds(condition: Any, actual: Any) -> bool:
    if isinstance(condition, Mapping):
        return all(_compare(operator, actual, value) for operator, value in condition.items())
    if isinstance(condition, Sequence) and not isinstance(condition, str):
        return _compare("in", actual, condition)
    return _compare("eq", actual, condition)


def matches(rule: Rule, lead: LeadFacts) -> bool:
    return all(
        condition_holds(condition, lead.value(name)) for name, condition in rule.when.items()
    )


def first_match(rules: Sequence[Rule], lead: LeadFacts) -> Rule:
    """The first rule whose conditions all hold; `DEFAULT_RULE` when none does."""
    return next((rule for rule in rules if matches(rule, lead)), DEFAULT_RULE)
