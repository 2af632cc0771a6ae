"""The scoring model: a versioned document of rules, validated on load, kept in YAML.

A rule looks at one field of the lead profile and, when it matches, adds its points (negative
points take some away). Fit rules describe who the lead is (company size, country, job title);
buying signals describe what the lead asked for (a demo, a quote): they add their points to
engagement and make the lead hot at once, whatever its total. Thresholds turn the total into a
temperature. Sales operations change the model without a release; its `version` travels with
every score so that any score can be explained later.

Operators: `equals` (`value`), `in` (`values`), `range` (`min` and/or `max`, both inclusive,
numbers only), `missing` (absent or blank) and `regex` (`pattern`, searched case-insensitively).
Text comparisons of `equals` and `in` ignore case.
"""

from __future__ import annotations

import re
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.events import LeadProfile

DEFAULT_MODEL_FILE = "default_model.yaml"
LEAD_FIELDS: tuple[str, ...] = tuple(LeadProfile.model_fields)

Scalar = bool | int | float | str
RuleId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]


class ScoringModelError(ValueError):
    """The scoring model file cannot be read, or is not a valid scoring model."""


class _Rule(BaseModel):
    """What every rule has, whatever its operator."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: RuleId
    field: str
    points: FiniteFloat
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] | None = None

    @field_validator("field")
    @classmethod
    def _is_a_lead_field(cls, value: str) -> str:
        if value not in LEAD_FIELDS:
            raise ValueError(
                f"unknown lead field {value!r}; expected one of: {', '.join(LEAD_FIELDS)}"
            )
        return value

    def applies_to(self, profile: LeadProfile) -> bool:
        return self.matches(getattr(profile, self.field))

    def matches(self, value: object) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    @property
    def explanation(self) -> str:
        """The reason shown in a score's breakdown: the configured one, or a generated one."""
        return self.reason or self.describe()


class EqualsRule(_Rule):
    operator: Literal["equals"]
    value: Scalar

    def matches(self, value: object) -> bool:
        return _same(value, self.value)

    def describe(self) -> str:
        return f"{self.field} is {self.value}"


class InRule(_Rule):
    operator: Literal["in"]
    values: Annotated[tuple[Scalar, ...], Field(min_length=1)]

    def matches(self, value: object) -> bool:
        return any(_same(value, candidate) for candidate in self.values)

    def describe(self) -> str:
        return f"{self.field} is one of {', '.join(str(value) for value in self.values)}"


class RangeRule(_Rule):
    operator: Literal["range"]
    min: FiniteFloat | None = None
    max: FiniteFloat | None = None

    @model_validator(mode="after")
    def _has_sensible_bounds(self) -> Self:
        if self.min is None and self.max is None:
            raise ValueError("a range rule needs `min`, `max` or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"range min ({self.min:g}) is above max ({self.max:g})")
        return self

    def matches(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return (self.min is None or value >= self.min) and (self.max is None or value <= self.max)

    def describe(self) -> str:
        if self.max is None:
            return f"{self.field} at least {self.min:g}"
        if self.min is None:
            return f"{self.field} at most {self.max:g}"
        return f"{self.field} from {self.min:g} to {self.max:g}"


class MissingRule(_Rule):
    operator: Literal["missing"]

    def matches(self, value: object) -> bool:
        return value is None or (isinstance(value, str) and not value.strip())

    def describe(self) -> str:
        return f"no {self.field}"


class RegexRule(_Rule):
    operator: Literal["regex"]
    pattern: Annotated[str, StringConstraints(min_length=1)]

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as error:
            raise ValueError(f"invalid regular expression: {error}") from None
        return value

    def matches(self, value: object) -> bool:
        return isinstance(value, str) and re.search(self.pattern, value, re.IGNORECASE) is not None

    def describe(self) -> str:
        return f"{self.field} matches /{self.pattern}/"


Rule = Annotated[
    EqualsRule | InRule | RangeRule | MissingRule | RegexRule, Field(discriminator="operator")
]


class Thresholds(BaseModel):
    """The lowest totals that make a lead warm and hot."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    warm: FiniteFloat
    hot: FiniteFloat

    @model_validator(mode="after")
    def _warm_before_hot(self) -> Self:
        if self.warm > self.hot:
            raise ValueError(f"warm threshold ({self.warm:g}) is above hot ({self.hot:g})")
        return self


class ScoringModel(BaseModel):
    """A complete scoring model: its version, rules and temperature thresholds."""

    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)

    version: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    thresholds: Thresholds
    fit_rules: tuple[Rule, ...] = ()
    buying_signals: tuple[Rule, ...] = ()

    @model_validator(mode="after")
    def _rule_ids_are_unique(self) -> Self:
        counts = Counter(rule.id for rule in (*self.fit_rules, *self.buying_signals))
        repeated = sorted(rule_id for rule_id, count in counts.items() if count > 1)
        if repeated:
            raise ValueError(f"rule ids must be unique; repeated: {', '.join(repeated)}")
        return self


def load_scoring_model(path: Path | None = None) -> ScoringModel:
    """The model in the YAML file at `path`, or the default one shipped with the scorer."""
    source = str(path) if path else f"services.scorer/{DEFAULT_MODEL_FILE}"
    try:
        if path:
            text = path.read_text(encoding="utf-8")
        else:
            text = resources.files("services.scorer").joinpath(DEFAULT_MODEL_FILE).read_text(
                encoding="utf-8"
            )
        return ScoringModel.model_validate(yaml.safe_load(text))
    except (OSError, yaml.YAMLError) as error:
        raise ScoringModelError(f"cannot read scoring model {source}: {error}") from error
    except ValidationError as error:
        raise ScoringModelError(f"invalid scoring model {source}: {error}") from error


def _same(actual: object, expected: Scalar) -> bool:
    if isinstance(actual, bool) or isinstance(expected, bool):
        return actual is expected
    if isinstance(actual, str) and isinstance(expected, str):
        return actual.casefold() == expected.casefold()
    return actual == expected
