"""The pure decisions: round robin, escalation targets, webhook retry timing. No I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.router.notifications import outcome_of, parse_retry_after, retry_delay
from services.router.routing import SdrCandidate, choose_sdr, escalation_target

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def sdr(
    sdr_id: str, *, last: float | None = None, created: float = 0.0, active: bool = True
) -> SdrCandidate:
    return SdrCandidate(
        id=sdr_id,
        active=active,
        last_assigned_at=None if last is None else T0 + timedelta(seconds=last),
        created_at=T0 + timedelta(seconds=created),
    )


def chosen(roster: list[SdrCandidate], exclude: set[str] | None = None) -> str | None:
    candidate = choose_sdr(roster, exclude or set())
    return candidate.id if candidate else None


def test_the_sdr_assigned_longest_ago_goes_next() -> None:
    roster = [sdr("a", last=30), sdr("b", last=10), sdr("c", last=20)]
    assert chosen(roster) == "b"


def test_never_assigned_sdrs_go_first_oldest_on_the_roster_first() -> None:
    roster = [sdr("a", last=1), sdr("late", created=5), sdr("early", created=2)]
    assert chosen(roster) == "early"


def test_ties_go_to_the_earlier_created_then_the_smaller_id() -> None:
    assert chosen([sdr("b", last=5, created=1), sdr("a", last=5, created=2)]) == "b"
    assert chosen([sdr("b", last=5), sdr("a", last=5)]) == "a"


def test_round_robin_cycles_through_everyone() -> None:
    roster = {c.id: c for c in (sdr("a", created=0), sdr("b", created=1), sdr("c", created=2))}
    order = []
    for step in range(6):
        pick = choose_sdr(roster.values())
        assert pick is not None
        order.append(pick.id)
        roster[pick.id] = sdr(pick.id, last=step, created=roster[pick.id].created_at.second)
    assert order == ["a", "b", "c", "a", "b", "c"]


def test_excluded_and_inactive_sdrs_are_never_chosen() -> None:
    roster = [sdr("a"), sdr("b", created=1, active=False), sdr("c", created=2)]
    assert chosen(roster, exclude={"a"}) == "c"


def test_no_candidate_gives_none() -> None:
    assert choose_sdr([]) is None
    assert choose_sdr([sdr("a")], exclude={"a"}) is None
    assert choose_sdr([sdr("a", active=False)]) is None


def test_escalation_prefers_an_sdr_who_never_had_the_lead() -> None:
    roster = [sdr("a", last=1), sdr("b", last=2), sdr("c", last=3)]
    target = escalation_target(roster, lapsed_sdr_id="b", previous_sdr_ids={"a", "b"})
    assert target is not None and target.id == "c"


def test_escalation_falls_back_to_an_earlier_sdr_but_never_the_one_who_lapsed() -> None:
    roster = [sdr("a", last=1), sdr("b", last=0)]
    target = escalation_target(roster, lapsed_sdr_id="b", previous_sdr_ids={"a", "b"})
    assert target is not None and target.id == "a"
    assert escalation_target([sdr("b")], lapsed_sdr_id="b", previous_sdr_ids={"b"}) is None


def test_backoff_doubles_with_jitter_and_is_capped() -> None:
    delays = [retry_delay(n, base=1, cap=10, retry_after=None, jitter=0.0) for n in (1, 2, 3, 4, 5)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 5.0]
    assert retry_delay(3, base=1, cap=10, retry_after=None, jitter=0.999) == pytest.approx(4, 0.01)


def test_retry_after_wins_over_backoff() -> None:
    assert retry_delay(1, base=1, cap=10, retry_after=42.0, jitter=0.5) == 42.0
    assert parse_retry_after("7", T0) == 7.0
    assert parse_retry_after("Mon, 05 Jan 2026 09:00:30 GMT", T0) == 30.0
    assert parse_retry_after("soon", T0) is None
    assert parse_retry_after(None, T0) is None


@pytest.mark.parametrize(
    ("status_code", "attempt", "expected"),
    [
        (200, 1, "delivered"),
        (204, 3, "delivered"),
        (None, 1, "retry"),
        (500, 1, "retry"),
        (503, 2, "retry"),
        (429, 1, "retry"),
        (408, 1, "retry"),
        (503, 3, "failed"),
        (404, 1, "failed"),
        (301, 1, "failed"),
    ],
)
def test_which_answers_are_retried(status_code: int | None, attempt: int, expected: str) -> None:
    assert outcome_of(status_code, attempt, max_attempts=3) == expected
