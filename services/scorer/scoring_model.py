"""The scoring model: a versioned document of rules, validated on load, kept in YAML.

Four parts, all optional but the thresholds:

- **Fit rules** look at one field of the lead (`industry`, `employee_count`, `annual_revenue`,
  `country`, `job_title`... plus two derived ones: `email_domain`, and `region`, the name of
  the `regions` entry that lists the lead's country, `other` when none does). When a rule
  matches, its points count; negative points take some away (free-mail domain, student,
  competitor, outside the territory).
- **Engagement rules** look at the lead's signals of one `signal_type` (optionally only those
  whose `url` matches a pattern). A rule counts `once` (its freshest signal) or is
  `repeatable` (every signal, within `cap` points); with `half_life_days`, each signal's points
  halve every half-life, so old activity fades.
- **Buying signals** are rules of either kind (a field such as `demo_requested`, or a signal
  such as `demo_request`) that make the lead hot and MQL at once, whatever its total; a
  signal keeps the lead hot for `hot_for_days` after it happened (for good when unset).
- **Thresholds** turn the total into a temperature (cold / warm / hot), and the **MQL rule**
  says when marketing hands the lead to sales (`min_fit` and `min_total`).

Field operators: `equals` (`value`), `in` (`values`), `range` (`min` and/or `max`, both
inclusive, numbers only), `missing` (absent or blank), `regex` (`pattern`, searched
case-insensitively) and `keywords` (any of `keywords` as a whole word, ignoring case). Text
comparisons ignore case. `negate: true` turns a rule around: it matches a lead that *has* the
field and does not meet the condition (a country outside the territory).

Sales operations change the model without a release (`PUT /v1/scoring-model`); its `version`
travels with every score so that any score can be explained later.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    FiniteFloat,
    PositiveFloat,
    StringConstraints,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.events import LeadProfile, ScoreLine

DEFAULT_MODEL_FILE = "default_model.yaml"
DERIVED_FIELDS: tuple[str, ...] = ("email_domain", "region")
OTHER_REGION = "other"
LEAD_FIELDS: tuple[str, ...] = (*LeadProfile.model_fields, *DERIVED_FIELDS)

Scalar = bool | int | float | str
RuleId = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
SignalTypeName = Annotated[
    str, StringConstraints(pattern=r"^(custom:)?[a-z0-9][a-z0-9_.-]{0,63}$")
]


class ScoringModelError(ValueError):
    """The scoring model file cannot be read, or is not a valid scoring model."""


def _compiled(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as error:
        raise ValueError(f"invalid regular expression: {error}") from None


def value_key(value: object) -> tuple[str, object]:
    """How a value compares: booleans only to booleans, text ignoring case, numbers by value."""
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, str):
        return ("text", value.casefold())
    if isinstance(value, int | float):
        return ("number", float(value))
    return ("other", value)


def is_blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


class _FieldRule(BaseModel):
    """What every field rule has, whatever its operator."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: RuleId
    field: str
    points: FiniteFloat
    reason: Reason | None = None
    negate: bool = False

    @field_validator("field")
    @classmethod
    def _is_a_lead_field(cls, value: str) -> str:
        if value not in LEAD_FIELDS:
            raise ValueError(
                f"unknown lead field {value!r}; expected one of: {', '.join(LEAD_FIELDS)}"
            )
        return value

    def applies_to(self, facts: Mapping[str, object]) -> bool:
        value = facts.get(self.field)
        if self.negate:
            return not is_blank(value) and not self.matches(value)
        return self.matches(value)

    def matches(self, value: object) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    @cached_property
    def explanation(self) -> str:
        """The reason shown in a score's breakdown: the configured one, or a generated one."""
        if self.reason:
            return self.reason
        return f"not ({self.describe()})" if self.negate else self.describe()

    @cached_property
    def line(self) -> ScoreLine:
        """The rule's line in a breakdown when it matches (the same every time)."""
        return ScoreLine(
            rule_id=self.id, points=self.points, raw_points=self.points,
            reason=self.explanation, evidence=[self.field],
        )


class EqualsRule(_FieldRule):
    operator: Literal["equals"]
    value: Scalar

    def matches(self, value: object) -> bool:
        return value is not None and value_key(value) == value_key(self.value)

    def describe(self) -> str:
        return f"{self.field} is {self.value}"


class InRule(_FieldRule):
    operator: Literal["in"]
    values: Annotated[tuple[Scalar, ...], Field(min_length=1)]

    @cached_property
    def _keys(self) -> frozenset[tuple[str, object]]:
        return frozenset(value_key(value) for value in self.values)

    def matches(self, value: object) -> bool:
        return value is not None and value_key(value) in self._keys

    def describe(self) -> str:
        shown = ", ".join(str(value) for value in self.values[:5])
        more = f" (+{len(self.values) - 5} more)" if len(self.values) > 5 else ""
        return f"{self.field} is one of {shown}{more}"


class RangeRule(_FieldRule):
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


class MissingRule(_FieldRule):
    operator: Literal["missing"]

    def applies_to(self, facts: Mapping[str, object]) -> bool:
        return self.matches(facts.get(self.field)) != self.negate

    def matches(self, value: object) -> bool:
        return is_blank(value)

    def describe(self) -> str:
        return f"no {self.field}"


class RegexRule(_FieldRule):
    operator: Literal["regex"]
    pattern: Annotated[str, StringConstraints(min_length=1, max_length=2000)]

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        _compiled(value)
        return value

    @cached_property
    def _regex(self) -> re.Pattern[str]:
        return _compiled(self.pattern)

    def matches(self, value: object) -> bool:
        return isinstance(value, str) and self._regex.search(value) is not None

    def describe(self) -> str:
        return f"{self.field} matches /{self.pattern}/"


class KeywordsRule(_FieldRule):
    """Any keyword as a whole word: `job_title` seniority (`vp`, `head`, `chief`...)."""

    operator: Literal["keywords"]
    keywords: Annotated[
        tuple[Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)], ...],
        Field(min_length=1),
    ]
    @cached_property
    def _regex(self) -> re.Pattern[str]:
        words = "|".join(re.escape(word) for word in self.keywords)
        return re.compile(rf"(?<!\w)(?:{words})(?!\w)", re.IGNORECASE)

    def matches(self, value: object) -> bool:
        return isinstance(value, str) and self._regex.search(value) is not None

    def describe(self) -> str:
        return f"{self.field} mentions {', '.join(self.keywords[:5])}"


FieldRule = Annotated[
    EqualsRule | InRule | RangeRule | MissingRule | RegexRule | KeywordsRule,
    Field(discriminator="operator"),
]


class SignalRule(BaseModel):
    """Points for the lead's signals of one type; they fade with `half_life_days`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: RuleId
    signal_type: SignalTypeName
    url: Annotated[str, StringConstraints(min_length=1, max_length=2000)] | None = None
    """A pattern the signal's URL must contain (searched case-insensitively): `/careers`."""
    points: FiniteFloat
    reason: Reason | None = None
    repeatable: bool = False
    """Count every matching signal (within `cap`), not only the freshest one."""
    cap: PositiveFloat | None = None
    """The most points (in absolute value) the rule adds, however many signals match."""
    half_life_days: PositiveFloat | None = None
    """Days after which a signal counts half; unset: it never fades."""

    @field_validator("url")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            _compiled(value)
        return value

    @cached_property
    def _url(self) -> re.Pattern[str] | None:
        return _compiled(self.url) if self.url else None

    def accepts(self, signal_url: str | None) -> bool:
        return self._url is None or (signal_url is not None and bool(self._url.search(signal_url)))

    @cached_property
    def explanation(self) -> str:
        if self.reason:
            return self.reason
        where = f" on {self.url}" if self.url else ""
        return f"{self.signal_type}{where}"


class BuyingSignalRule(SignalRule):
    """A signal that asks to talk to sales (demo, quote, pricing form)."""

    hot_for_days: PositiveFloat | None = None
    """How long after the signal the lead stays hot whatever its total; unset: for good."""


def _buying_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "signal" if "signal_type" in value else "field"
    return "signal" if isinstance(value, SignalRule) else "field"


BuyingSignal = Annotated[
    Annotated[FieldRule, Tag("field")] | Annotated[BuyingSignalRule, Tag("signal")],
    Discriminator(_buying_kind),
]


class Thresholds(BaseModel):
    """The lowest totals that make a lead warm and hot (the temperature bands)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    warm: FiniteFloat
    hot: FiniteFloat

    @model_validator(mode="after")
    def _warm_before_hot(self) -> Self:
        if self.warm > self.hot:
            raise ValueError(f"warm threshold ({self.warm:g}) is above hot ({self.hot:g})")
        return self


class MqlRule(BaseModel):
    """When marketing hands a lead to sales: enough fit *and* enough total score."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_fit: FiniteFloat | None = None
    min_total: FiniteFloat

    def met(self, *, fit: float, total: float) -> bool:
        return (self.min_fit is None or fit >= self.min_fit) and total >= self.min_total


CountryCode = Annotated[str, StringConstraints(to_upper=True, pattern=r"^[A-Za-z]{2}$")]


class ScoringModel(BaseModel):
    """A complete scoring model: its version, rules, temperature thresholds and MQL rule."""

    model_config = ConfigDict(frozen=True, extra="forbid", coerce_numbers_to_str=True)

    version: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    thresholds: Thresholds
    mql: MqlRule | None = None
    """Unset: only buying signals make a lead MQL."""
    regions: dict[
        Annotated[str, StringConstraints(min_length=1, max_length=64)], tuple[CountryCode, ...]
    ] = Field(default_factory=dict)
    """Region name -> its countries (ISO alpha-2); fit rules may then test `region`."""
    fit_rules: tuple[FieldRule, ...] = ()
    engagement_rules: tuple[SignalRule, ...] = ()
    buying_signals: tuple[BuyingSignal, ...] = ()

    @field_validator("engagement_rules", mode="before")
    @classmethod
    def _no_buying_fields(cls, value: Any) -> Any:
        for rule in value if isinstance(value, list | tuple) else ():
            if isinstance(rule, dict) and "hot_for_days" in rule:
                raise ValueError(
                    f"rule {rule.get('id')!r}: `hot_for_days` belongs to buying signals"
                )
        return value

    @model_validator(mode="after")
    def _rule_ids_are_unique(self) -> Self:
        counts = Counter(rule.id for rule in self.rules)
        repeated = sorted(rule_id for rule_id, count in counts.items() if count > 1)
        if repeated:
            raise ValueError(f"rule ids must be unique; repeated: {', '.join(repeated)}")
        if OTHER_REGION in self.regions:
            raise ValueError(f"{OTHER_REGION!r} is the region of countries listed in no region")
        countries = Counter(country for members in self.regions.values() for country in members)
        shared = sorted(country for country, count in countries.items() if count > 1)
        if shared:
            raise ValueError(f"a country belongs to one region only; repeated: {', '.join(shared)}")
        return self

    @cached_property
    def _region_of(self) -> dict[str, str]:
        return {
            country: region for region, members in self.regions.items() for country in members
        }

    @cached_property
    def _signal_rules(self) -> dict[str, tuple[SignalRule, ...]]:
        by_type: dict[str, list[SignalRule]] = {}
        for rule in self.signal_rules:
            by_type.setdefault(rule.signal_type, []).append(rule)
        return {name: tuple(rules) for name, rules in by_type.items()}

    @property
    def rules(self) -> tuple[FieldRule | SignalRule, ...]:
        return (*self.fit_rules, *self.engagement_rules, *self.buying_signals)

    @cached_property
    def signal_rules(self) -> tuple[SignalRule, ...]:
        """Engagement rules then buying signals that look at signals, in document order."""
        buying = tuple(rule for rule in self.buying_signals if isinstance(rule, SignalRule))
        return (*self.engagement_rules, *buying)

    @cached_property
    def buying_field_rules(self) -> tuple[FieldRule, ...]:
        """Buying signals that look at a field of the lead (`demo_requested`)."""
        return tuple(rule for rule in self.buying_signals if not isinstance(rule, SignalRule))

    def rules_for(self, signal_type: str) -> tuple[SignalRule, ...]:
        return self._signal_rules.get(signal_type, ())

    def region_of(self, country: str | None) -> str | None:
        """The region listing `country`; `other` for a country in none; None without country."""
        if not country or not self.regions:
            return None
        return self._region_of.get(country.upper(), OTHER_REGION)

    def document(self) -> dict[str, Any]:
        """The model as a plain document (what YAML and `GET /v1/scoring-model` show)."""
        return self.model_dump(mode="json", exclude_defaults=True)


def parse_scoring_model(document: Any) -> ScoringModel:
    """Validate a document; raises pydantic's `ValidationError`, whose entries name each field."""
    return ScoringModel.model_validate(document)


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
        return parse_scoring_model(yaml.safe_load(text))
    except (OSError, yaml.YAMLError) as error:
        raise ScoringModelError(f"cannot read scoring model {source}: {error}") from error
    except ValidationError as error:
        raise ScoringModelError(f"invalid scoring model {source}: {error}") from error
