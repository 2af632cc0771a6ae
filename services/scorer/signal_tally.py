"""What scoring needs of a lead's signals, rule by rule, so that a new signal adds to it.

A `SignalTally` holds, for each signal rule of one scoring model that matched at least one of
the lead's signals, a `RuleTally`: how many signals it matched, the newest of them (the
evidence a breakdown quotes, and the one that keeps a buying signal hot), and the day of each
signal it counts when its points fade. `LeadScorer` scores from the tally alone: the score of
a lead is the same whether its tally was built from its whole history (`tally_of`) or carried
from its stored score and added to (`SignalTally.add`), to the last bit, because the tally is
the same either way and the decayed points are an exactly rounded sum (`math.fsum`) of one
term per counted signal, whatever their order.

The tally is stored with the lead's score (`scorer_lead_score.signal_tally`) with the model
version it was built under and the `updated_at` of the row it was written with: any write of
the row that does not carry a new tally (a stage move, an erasure, an older scorer instance)
makes it stale, and a stale tally, or one of another model, is never used: the lead's whole
history is read again (`SignalTally.stored`).

A signal must be added once: the caller drops the signals the lead already has.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from services.scorer.score_result import Signal
from services.scorer.scoring_model import ScoringModel, SignalRule

EVIDENCE_LIMIT = 10
"""At most this many signal ids are quoted as a line's evidence (the most recent ones). Each
is written with the lead's score and tally and sent in its `lead.scored`: at 50, a campaign's
leads spent 12% more CPU a signal on them (`bench/scorer_apply_cpu.py --rounds 50`)."""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def micros_of(moment: datetime) -> int:
    """`moment` as whole microseconds since the epoch: exact, and ordered as the moments are."""
    return (moment - _EPOCH) // _MICROSECOND


def moment_of(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=micros)


@dataclass
class RuleTally:
    """One signal rule's share of a lead's signals."""

    matched: int = 0
    """How many of the lead's signals the rule matched."""
    newest: list[tuple[int, str]] = field(default_factory=list)
    """(`micros_of(signal_at)`, signal id) of the newest matches, oldest first: the last one is
    the newest (ties broken by id, as the breakdown orders them); at most `EVIDENCE_LIMIT`, or
    one for a rule that counts its freshest signal only."""
    days: list[float] = field(default_factory=list)
    """`Signal.day` of each signal the rule counts, when its points fade, in order: the same
    tally whatever order the signals came in."""

    def counted(self, rule: SignalRule) -> int:
        """How many signals count towards the rule's points."""
        return self.matched if rule.repeatable else 1

    def newest_at(self) -> datetime:
        return moment_of(self.newest[-1][0])

    def evidence(self) -> list[str]:
        """The ids quoted in the breakdown, newest first."""
        return [signal_id for _, signal_id in reversed(self.newest)]

    def add(self, rule: SignalRule, signal: Signal) -> None:
        self.matched += 1
        entry = (micros_of(signal.signal_at), signal.signal_id)
        kept = EVIDENCE_LIMIT if rule.repeatable else 1
        newer = len(self.newest) < kept or entry > self.newest[0]
        if newer:
            insort(self.newest, entry)
            del self.newest[:-kept]
        if rule.half_life_days is None:
            return
        if rule.repeatable:
            insort(self.days, signal.day)
        elif newer:
            self.days = [signal.day]

    def copy(self) -> RuleTally:
        return RuleTally(self.matched, list(self.newest), list(self.days))


@dataclass
class SignalTally:
    """A lead's signals as the rules of one scoring model see them."""

    model_version: str
    rules: dict[str, RuleTally] = field(default_factory=dict)

    def add(self, model: ScoringModel, signals: Iterable[Signal]) -> None:
        """Count signals the tally does not hold yet (the caller drops the ones it holds)."""
        for signal in signals:
            for rule in model.rules_for(signal.signal_type):
                if rule.accepts(signal.url):
                    tally = self.rules.get(rule.id)
                    if tally is None:
                        tally = self.rules[rule.id] = RuleTally()
                    tally.add(rule, signal)

    def copy(self) -> SignalTally:
        return SignalTally(
            self.model_version, {rule_id: tally.copy() for rule_id, tally in self.rules.items()}
        )

    def stored_form(self, updated_at: datetime) -> dict[str, Any]:
        """The tally as kept in the lead's row written at `updated_at`."""
        return {
            "model_version": self.model_version,
            "row_updated_at": micros_of(updated_at),
            "rules": {
                rule_id: [tally.matched, [list(entry) for entry in tally.newest], tally.days]
                for rule_id, tally in self.rules.items()
            },
        }

    @classmethod
    def stored(cls, row: Mapping[str, Any], model: ScoringModel) -> SignalTally | None:
        """The tally kept in a lead's row, if it is current: written with the row as it is, and
        under `model`; None otherwise (the lead's history must be read again)."""
        stored = row.get("signal_tally")
        if (
            not stored
            or stored.get("model_version") != model.version
            or row.get("updated_at") is None
            or stored.get("row_updated_at") != micros_of(row["updated_at"])
        ):
            return None
        # A tally stored when more evidence was kept keeps its newest.
        return cls(model.version, {
            rule_id: RuleTally(matched, [(micros, signal_id) for micros, signal_id
                                         in newest[-EVIDENCE_LIMIT:]], list(days))
            for rule_id, (matched, newest, days) in stored["rules"].items()
        })


def tally_of(signals: Iterable[Signal], model: ScoringModel) -> SignalTally:
    """The tally of a whole history; a repeated id counts once (its last occurrence)."""
    tally = SignalTally(model.version)
    tally.add(model, {signal.signal_id: signal for signal in signals}.values())
    return tally
