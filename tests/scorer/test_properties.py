"""Properties of `score()` over generated leads and signal histories (hypothesis).

Adding a positive signal never lowers the score; replaying a lead's history, in any order,
gives the same score; a signal delivered twice counts once.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from services.scorer.score_result import Signal
from services.scorer.scoring import makes_mql, score
from services.scorer.scoring_model import load_scoring_model
from shared.events import LeadProfile

MODEL = load_scoring_model()
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
POSITIVE_TYPES = sorted(
    {rule.signal_type for rule in MODEL.signal_rules if rule.points > 0 and not rule.url}
)
ALL_TYPES = sorted({rule.signal_type for rule in MODEL.signal_rules})
URLS = [None, "https://acme.io/pricing", "https://acme.io/careers", "https://acme.io/"]

profiles = st.builds(
    LeadProfile,
    email=st.sampled_from(["ada@acme.io", "kid@gmail.com", "bob@rival.example"]),
    company=st.sampled_from([None, "Acme"]),
    country=st.sampled_from([None, "FR", "US", "DE"]),
    employee_count=st.one_of(st.none(), st.integers(0, 5000)),
    job_title=st.sampled_from([None, "VP Sales", "Student", "Engineer"]),
    demo_requested=st.booleans(),
)


def signals_of(types: list[str]) -> st.SearchStrategy[list[Signal]]:
    one = st.builds(
        Signal,
        signal_id=st.text("abcdef0123456789", min_size=1, max_size=6),
        signal_type=st.sampled_from(types),
        signal_at=st.integers(0, 400 * 24).map(lambda hours: NOW - timedelta(hours=hours)),
        url=st.sampled_from(URLS),
    )
    return st.lists(one, max_size=25, unique_by=lambda signal: signal.signal_id)


@settings(max_examples=300, deadline=None)
@given(profile=profiles, history=signals_of(ALL_TYPES), extra=signals_of(POSITIVE_TYPES))
def test_adding_a_positive_signal_never_lowers_the_score(
    profile: LeadProfile, history: list[Signal], extra: list[Signal]
) -> None:
    before = score(profile, history, MODEL, NOW)
    known = {signal.signal_id for signal in history}
    for added in extra:
        if added.signal_id in known:
            continue
        after = score(profile, [*history, added], MODEL, NOW)
        assert after.total >= before.total
        assert after.engagement >= before.engagement
        before, history = after, [*history, added]


@settings(max_examples=300, deadline=None)
@given(profile=profiles, history=signals_of(ALL_TYPES), seed=st.randoms(use_true_random=False))
def test_replaying_a_history_in_any_order_gives_the_same_score(
    profile: LeadProfile, history: list[Signal], seed: object
) -> None:
    shuffled = list(history)
    seed.shuffle(shuffled)  # type: ignore[attr-defined]
    assert score(profile, shuffled, MODEL, NOW) == score(profile, history, MODEL, NOW)


@settings(max_examples=300, deadline=None)
@given(profile=profiles, history=signals_of(ALL_TYPES), data=st.data())
def test_a_signal_delivered_twice_counts_once(
    profile: LeadProfile, history: list[Signal], data: st.DataObject
) -> None:
    repeated = data.draw(st.lists(st.sampled_from(history), max_size=10)) if history else []
    assert score(profile, [*history, *repeated], MODEL, NOW) == score(profile, history, MODEL, NOW)


@settings(max_examples=300, deadline=None)
@given(profile=profiles, history=signals_of(ALL_TYPES))
def test_makes_mql_says_what_the_whole_score_says(
    profile: LeadProfile, history: list[Signal]
) -> None:
    assert makes_mql(profile, history, MODEL, NOW) == score(profile, history, MODEL, NOW).mql
