"""Rule indexes: the rules of a scoring model that can apply to a lead, found without trying each.

`equals` and `in` fit rules become one hash lookup per field, whatever their number; the other
fit rules are tried field by field. The lines of a set of facts are memoised: they depend on
the facts and the rules alone, so a signal (which leaves the profile as it was) costs no fit
evaluation at all. Signal rules are grouped by signal type, so a lead's signals only meet the
rules of their type. `rule_index(model)` builds a model's index once and keeps it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

from services.scorer.scoring_model import (
    EqualsRule,
    FieldRule,
    InRule,
    MissingRule,
    RangeRule,
    ScoringModel,
    SignalRule,
    is_blank,
    value_key,
)
from shared.events import ScoreLine

MEMO_LIMIT = 8192
"""Distinct sets of facts remembered per rule set; the memo starts afresh past this size."""
MODEL_LIMIT = 8
"""Models whose index is kept (the one in force, drafts previewed through the API)."""


class FieldRules:
    """A sequence of field rules, evaluated at once against a lead's facts."""

    def __init__(self, rules: Sequence[FieldRule]) -> None:
        self._lines = tuple(rule.line for rule in rules)
        lookups: dict[str, dict[tuple[str, object], list[int]]] = {}
        tried: dict[str, list[tuple[int, Callable[[object], bool]]]] = {}
        for position, rule in enumerate(rules):
            if isinstance(rule, EqualsRule) and not rule.negate:
                keys = [value_key(rule.value)]
            elif isinstance(rule, InRule) and not rule.negate:
                keys = [value_key(value) for value in rule.values]
            else:
                tried.setdefault(rule.field, []).append((position, _test_of(rule)))
                continue
            table = lookups.setdefault(rule.field, {})
            for key in dict.fromkeys(keys):
                table.setdefault(key, []).append(position)
        self._lookups = tuple(
            (field, {key: tuple(positions) for key, positions in table.items()})
            for field, table in lookups.items()
        )
        self._tried = tuple((field, tuple(rules)) for field, rules in tried.items())
        self._fields = tuple(sorted({*lookups, *tried}))
        self._memo: dict[tuple[object, ...], tuple[tuple[ScoreLine, ...], float]] = {}

    def lines(self, facts: Mapping[str, object]) -> tuple[ScoreLine, ...]:
        """The lines of the rules that apply to `facts`, in the rules' order."""
        return self.lines_and_total(facts)[0]

    def lines_and_total(
        self, facts: Mapping[str, object]
    ) -> tuple[tuple[ScoreLine, ...], float]:
        """The lines that apply to `facts`, and their points summed (rounded to the hundredth)."""
        # The type is part of the key: True == 1 and 1 == 1.0, but rules tell them apart.
        key = tuple((type(value), value) for value in map(facts.get, self._fields))
        try:
            known = self._memo.get(key)
        except TypeError:  # a value that cannot be hashed: evaluate, do not remember
            return self._evaluate(facts)
        if known is not None:
            return known
        found = self._evaluate(facts)
        if len(self._memo) >= MEMO_LIMIT:
            self._memo.clear()
        self._memo[key] = found
        return found

    def _evaluate(self, facts: Mapping[str, object]) -> tuple[tuple[ScoreLine, ...], float]:
        matched: list[int] = []
        for field, table in self._lookups:
            value = facts.get(field)
            if value is None:
                continue
            try:
                hits = table.get(value_key(value))
            except TypeError:
                hits = None
            if hits:
                matched.extend(hits)
        for field, tests in self._tried:
            value = facts.get(field)
            matched.extend(position for position, test in tests if test(value))
        matched.sort()
        lines = tuple(self._lines[position] for position in matched)
        return lines, round(math.fsum(line.points for line in lines), 2) + 0.0


def _test_of(rule: FieldRule) -> Callable[[object], bool]:
    """`rule.applies_to` as a function of the field's value alone, `negate` folded in."""
    if isinstance(rule, MissingRule):
        return (lambda value: not is_blank(value)) if rule.negate else is_blank
    matches = rule.matches
    if isinstance(rule, RangeRule):
        low = -math.inf if rule.min is None else rule.min
        high = math.inf if rule.max is None else rule.max

        def matches(value: object) -> bool:
            return (not isinstance(value, bool) and isinstance(value, int | float)
                    and low <= value <= high)

    if rule.negate:
        return lambda value: not is_blank(value) and not matches(value)
    return matches


class RuleIndex:
    """What a scoring model's rules look like once indexed for scoring."""

    def __init__(self, model: ScoringModel) -> None:
        self.fit = FieldRules(model.fit_rules)
        self.buying_fields = FieldRules(model.buying_field_rules)
        by_type: dict[str, list[tuple[int, SignalRule]]] = {}
        for position, rule in enumerate(model.signal_rules):
            by_type.setdefault(rule.signal_type, []).append((position, rule))
        self._signal_rules = {name: tuple(rules) for name, rules in by_type.items()}

    def signal_rules(self, signal_type: str) -> tuple[tuple[int, SignalRule], ...]:
        """The signal rules of `signal_type`, each with its position in `model.signal_rules`."""
        return self._signal_rules.get(signal_type, ())


_INDEXES: dict[int, tuple[ScoringModel, RuleIndex]] = {}


def rule_index(model: ScoringModel) -> RuleIndex:
    """The index of `model`, built the first time it is asked for."""
    known = _INDEXES.get(id(model))
    if known is not None and known[0] is model:
        return known[1]
    if len(_INDEXES) >= MODEL_LIMIT:
        _INDEXES.clear()
    index = RuleIndex(model)
    _INDEXES[id(model)] = (model, index)  # the model is held, so its id is not reused
    return index
