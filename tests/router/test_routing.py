"""The pure decisions: eligibility, strategies, rules, escalation steps, signatures, retry
timing. No I/O."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.router.delivery_policy import (
    outcome_of,
    parse_retry_after,
    retry_delay,
)
from services.router.escalation import next_escalation
from services.router.reports import percentile, sla
from services.router.routing import (
    LeadFacts,
    Period,
    Rep,
    Shift,
    Strategy,
    choose_rep,
    eligibility,
    in_working_hours,
    next_opening,
    parse_working_hours,
    presence_fraction,
    working_deadline,
)
from services.router.rules import DEFAULT_RULE, STORED, Rule, RuleSet, first_match
from services.router.signing import sign, verify

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
"""A Monday, 09:00 UTC."""
VECTORS = Path("/work/shared/vendors/standardwebhooks")


def rep(rep_id: str, *, last: float | None = None, created: float = 0.0, **fields: Any) -> Rep:
    return Rep(
        id=rep_id,
        created_at=T0 + timedelta(seconds=created) - timedelta(days=30),
        last_assigned_at=None if last is None else T0 + timedelta(seconds=last),
        **fields,
    )


LEAD = LeadFacts(id="lead-1", temperature="hot", score=90, country="FR", language="fr")


def pick(reps: list[Rep], strategy: Strategy = "round_robin", **options: Any) -> str | None:
    return choose_rep(reps, options.pop("lead", LEAD), strategy, options.pop("now", T0),
                      **options).rep_id


# Round robin


def test_the_rep_assigned_longest_ago_goes_next() -> None:
    assert pick([rep("a", last=30), rep("b", last=10), rep("c", last=20)]) == "b"


def test_never_assigned_reps_go_first_oldest_on_the_roster_first() -> None:
    assert pick([rep("a", last=1), rep("late", created=5), rep("early", created=2)]) == "early"


def test_ties_go_to_the_earlier_created_then_the_smaller_id() -> None:
    assert pick([rep("b", last=5, created=1), rep("a", last=5, created=2)]) == "b"
    assert pick([rep("b", last=5), rep("a", last=5)]) == "a"


def test_round_robin_cycles_through_everyone() -> None:
    reps = {r.id: r for r in (rep("a", created=0), rep("b", created=1), rep("c", created=2))}
    order = []
    for step in range(6):
        chosen = pick(list(reps.values()))
        assert chosen is not None
        order.append(chosen)
        reps[chosen] = replace(reps[chosen], last_assigned_at=T0 + timedelta(seconds=step))
    assert order == ["a", "b", "c", "a", "b", "c"]


# Eligibility


@pytest.mark.parametrize(
    ("fields", "reasons"),
    [
        ({}, []),
        ({"active": False}, ["inactive"]),
        ({"presence": "away"}, ["presence_away"]),
        ({"presence": "offline"}, ["presence_offline"]),
        ({"capacity": 3, "open_assignments": 3}, ["at_capacity"]),
        ({"capacity": 3, "open_assignments": 2}, []),
        ({"languages": frozenset({"en", "de"})}, ["language"]),
        ({"languages": frozenset({"en", "fr"})}, []),
        ({"territories": frozenset({"DE"})}, ["territory"]),
        ({"territories": frozenset({"FR", "BE"})}, []),
        ({"out_of_office": (Period(T0 - timedelta(days=1), T0 + timedelta(hours=1)),)},
         ["out_of_office"]),
        ({"out_of_office": (Period(T0 - timedelta(days=1), T0),)}, []),
        ({"paused_until": T0 + timedelta(minutes=5)}, ["paused"]),
        ({"paused_until": T0}, []),
        # 09:00 UTC is 18:00 in Tokyo: after a 09:00-17:00 day.
        ({"timezone": "Asia/Tokyo", "working_hours": parse_working_hours(
            {"mon": ["09:00-17:00"]})}, ["out_of_hours"]),
        ({"timezone": "Europe/Paris", "working_hours": parse_working_hours(
            {"mon": ["09:00-17:00"]})}, []),
        ({"presence": "away", "capacity": 0}, ["presence_away", "at_capacity"]),
    ],
)
def test_eligibility_names_every_reason(fields: dict[str, Any], reasons: list[str]) -> None:
    assert eligibility(rep("a", **fields), LEAD, T0) == reasons


def test_excluded_reps_are_listed_with_their_reasons_in_the_decision() -> None:
    reps = [rep("away", presence="away"), rep("full", capacity=1, open_assignments=1),
            rep("german", languages=frozenset({"de"})), rep("ok", last=5),
            rep("lapsed", last=1)]
    decision = choose_rep(reps, LEAD, "round_robin", T0, exclude={"lapsed"})
    assert decision.rep_id == "ok"
    assert decision.excluded == {
        "away": ["presence_away"], "full": ["at_capacity"], "german": ["language"],
        "lapsed": ["already_had_lead"],
    }
    assert decision.candidates == ["away", "full", "german", "ok", "lapsed"]
    assert decision.tie_break == "assigned longest ago"


def test_nobody_eligible_gives_no_rep() -> None:
    decision = choose_rep([rep("a", presence="offline")], LEAD, "weighted_fairness", T0)
    assert decision.rep_id is None
    assert decision.excluded == {"a": ["presence_offline"]}
    assert choose_rep([], LEAD, "least_loaded", T0).rep_id is None


def test_working_hours_follow_the_reps_timezone_and_daylight_saving() -> None:
    shifts = parse_working_hours({"mon": ["09:00-12:00", "13:00-17:30"], "tue": ["09:00-17:00"]})
    assert shifts is not None
    paris_summer = datetime(2026, 7, 6, 7, 0, tzinfo=UTC)  # Monday 09:00 CEST
    assert in_working_hours(shifts, "Europe/Paris", paris_summer)
    assert not in_working_hours(shifts, "Europe/Paris", paris_summer - timedelta(minutes=1))
    lunch = paris_summer + timedelta(hours=3, minutes=30)
    assert not in_working_hours(shifts, "Europe/Paris", lunch)
    assert in_working_hours(None, "UTC", paris_summer)
    friday_evening = datetime(2026, 7, 10, 18, 0, tzinfo=UTC)
    assert next_opening(shifts, "Europe/Paris", friday_evening) == datetime(
        2026, 7, 13, 7, 0, tzinfo=UTC)
    assert next_opening((), "UTC", T0) is None
    with pytest.raises(ValueError, match="end must be after"):
        parse_working_hours({"mon": ["17:00-09:00"]})
    assert Shift(0, time(9), time(17)) in (parse_working_hours({"Monday": ["09:00-17:00"]}) or ())


# Weighted fairness


def simulate(reps: list[Rep], leads: int, now: datetime = T0) -> dict[str, int]:
    counts = {r.id: 0 for r in reps}
    by_id = {r.id: r for r in reps}
    for number in range(leads):
        decision = choose_rep(list(by_id.values()), LEAD, "weighted_fairness", now,
                              counts=counts, window_start=now - timedelta(days=7))
        assert decision.rep_id is not None
        counts[decision.rep_id] += 1
        by_id[decision.rep_id] = replace(by_id[decision.rep_id],
                                         last_assigned_at=now + timedelta(microseconds=number))
    return counts


def test_ten_thousand_leads_over_weights_2_1_1_land_within_2_points_of_target() -> None:
    reps = [rep("a", weight=2.0), rep("b", weight=1.0), rep("c", weight=1.0)]
    counts = simulate(reps, 10_000)
    shares = {rep_id: count / 10_000 for rep_id, count in counts.items()}
    assert shares["a"] == pytest.approx(0.50, abs=0.02)
    assert shares["b"] == pytest.approx(0.25, abs=0.02)
    assert shares["c"] == pytest.approx(0.25, abs=0.02)
    assert sum(counts.values()) == 10_000


def test_fairness_gives_the_lead_to_the_rep_furthest_below_target() -> None:
    reps = [rep("a", weight=2.0), rep("b"), rep("c")]
    decision = choose_rep(reps, LEAD, "weighted_fairness", T0,
                          counts={"a": 10, "b": 4, "c": 6}, window_start=T0 - timedelta(days=7))
    assert decision.rep_id == "b"
    assert decision.scores == {"a": pytest.approx(0.5), "b": pytest.approx(1.25),
                               "c": pytest.approx(-0.75)}
    assert decision.tie_break == "furthest below target share"


def test_time_out_of_office_lowers_the_target_so_nobody_floods_on_return() -> None:
    week = timedelta(days=7)
    back = rep("back", out_of_office=(Period(T0 - week, T0 - timedelta(days=3, hours=12)),))
    assert presence_fraction(back, T0 - week, T0) == pytest.approx(0.5)
    # Back with half the leads of a colleague: on target, not owed a catch-up.
    decision = choose_rep([back, rep("stayed", last=1)], LEAD, "weighted_fairness", T0,
                          counts={"back": 5, "stayed": 10}, window_start=T0 - week)
    assert decision.scores["back"] == pytest.approx(0.0 + 1 / 3, abs=1e-3)
    assert decision.scores["stayed"] == pytest.approx(2 / 3, abs=1e-3)
    assert decision.rep_id == "stayed"


def test_a_new_rep_targets_only_the_time_since_joining() -> None:
    week = timedelta(days=7)
    new = Rep(id="new", created_at=T0 - timedelta(days=1))
    assert presence_fraction(new, T0 - week, T0) == pytest.approx(1 / 7)
    decision = choose_rep([new, rep("old", last=1)], LEAD, "weighted_fairness", T0,
                          counts={"new": 2, "old": 12}, window_start=T0 - week)
    assert decision.rep_id == "old"


# Least loaded and account owner


def test_least_loaded_compares_open_assignments_over_capacity() -> None:
    reps = [rep("a", capacity=10, open_assignments=5), rep("b", capacity=4, open_assignments=1),
            rep("c", open_assignments=0, capacity=None, last=1)]
    decision = choose_rep(reps, LEAD, "least_loaded", T0)
    assert decision.rep_id == "c"
    assert decision.scores == {"a": 0.5, "b": 0.25, "c": 0.0}
    reps[2] = rep("c", capacity=2, open_assignments=1)
    assert pick(reps, "least_loaded") == "b"


def test_account_owner_is_sticky_and_falls_back_to_the_pool() -> None:
    reps = [rep("a", last=1), rep("owner", last=9)]
    decision = choose_rep(reps, LEAD, "account_owner", T0, account_owner_id="owner")
    assert (decision.rep_id, decision.tie_break) == ("owner", "account owner")
    reps[1] = rep("owner", last=9, presence="offline")
    fallback = choose_rep(reps, LEAD, "account_owner", T0, account_owner_id="owner")
    assert fallback.rep_id == "a"
    assert "not eligible" in fallback.note
    assert pick(reps, "account_owner", account_owner_id=None) == "a"


# Rules


RULES = RuleSet.model_validate({"rules": [
    {"id": "enterprise", "when": {"employee_count": {"gte": 1000}, "country": ["fr", "BE"]},
     "pool": "Enterprise", "strategy": "weighted_fairness"},
    {"id": "partners", "when": {"source": "partner", "score": {"gt": 50}}, "pool": "Partners"},
    {"id": "named", "when": {"account_key": {"exists": True}}, "strategy": "account_owner"},
    {"id": "rest", "pool": "SDR"},
]})


@pytest.mark.parametrize(
    ("facts", "rule_id"),
    [
        ({"employee_count": 5000, "country": "FR"}, "enterprise"),
        ({"employee_count": 999, "country": "FR"}, "rest"),
        ({"employee_count": 5000, "country": "DE"}, "rest"),
        ({"employee_count": None, "country": "BE"}, "rest"),
        ({"source": "partner", "score": 51}, "partners"),
        ({"source": "partner", "score": 50}, "rest"),
        ({"account_key": "acme.example"}, "named"),
        ({"account_key": "acme.example", "employee_count": 2000, "country": "BE"}, "enterprise"),
    ],
)
def test_the_first_matching_rule_wins(facts: dict[str, Any], rule_id: str) -> None:
    values = {"score": 80.0} | facts
    lead = LeadFacts(id="x", temperature="hot", **values)
    assert first_match(RULES.rules, lead).id == rule_id


def test_conditions_on_any_profile_field_and_the_default_rule() -> None:
    rules = [Rule(id="saas", when={"industry": {"in": ["SaaS", "Software"]}})]
    assert first_match(rules, LeadFacts(id="x", temperature="warm", score=1,
                                        fields={"industry": "saas"})).id == "saas"
    assert first_match(rules, LeadFacts(id="x", temperature="warm", score=1)) is DEFAULT_RULE


def test_invalid_rule_sets_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown operator 'greater'"):
        Rule(id="x", when={"score": {"greater": 3}})
    with pytest.raises(ValueError, match="unique"):
        RuleSet.model_validate({"rules": [{"id": "a"}, {"id": "a"}]})
    with pytest.raises(ValueError):
        Rule.model_validate({"id": "x", "strategy": "random"})


@pytest.mark.parametrize(("when", "named"), [
    ({"colour": "blue"}, "unknown condition 'colour'"),
    ({"country": {"gte": "FR"}}, "`gte` compares numbers"),
    ({"score": {"gt": "fifty"}}, "'fifty' is not a number"),
    ({"temperature": "boiling"}, "['boiling'] is not one of cold, hot, warm"),
    ({"stage": ["mql", "sqll"]}, "['sqll'] is not one of"),
    ({"account_key": {"exists": "yes"}}, "`exists` takes true or false"),
])
def test_a_condition_that_could_never_match_is_refused(when: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError) as refused:
        RuleSet.model_validate({"rules": [{"id": "typo", "when": when}]})
    assert named in str(refused.value)


def test_a_stored_rule_set_from_before_the_checks_still_loads() -> None:
    stored = RuleSet.model_validate(
        {"rules": [{"id": "old", "when": {"colour": "blue"}}]}, context=STORED)
    assert stored.rules[0].when == {"colour": "blue"}


def test_conditions_on_the_attribution_channel() -> None:
    rules = RuleSet.model_validate({"rules": [
        {"id": "events", "when": {"channel": ["events", "trade_show"], "temperature": "hot"}},
    ]}).rules
    at_a_show = LeadFacts(id="x", temperature="hot", score=1,
                          fields={"attribution": {"channel": "trade_show"}})
    from_ads = LeadFacts(id="y", temperature="hot", score=1,
                         fields={"attribution": {"channel": "ads"}})
    assert first_match(rules, at_a_show).id == "events"
    assert first_match(rules, from_ads) is DEFAULT_RULE


# Escalation steps


@pytest.mark.parametrize(
    ("reoffers", "eligible", "step"),
    [(0, True, "reoffer"), (2, True, "reoffer"), (3, True, "queue"), (0, False, "queue")],
)
def test_next_escalation(reoffers: int, eligible: bool, step: str) -> None:
    assert next_escalation(reoffers, 3, eligible) == step


# Standard Webhooks signatures, against the official vectors


def test_signatures_match_the_standard_webhooks_vectors() -> None:
    body = (VECTORS / "vector-crosslang-body.json").read_bytes().strip()
    assert body == b'{"test": 2432232314}'
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected
    rust = (VECTORS / "vector-rust-body.json").read_bytes().strip()
    assert json.loads(rust) == {"email": "test@example.com", "username": "test_user"}
    assert sign("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
                1649367553, rust) == "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="


def test_verification_accepts_any_matching_v1_and_rejects_tampering() -> None:
    body = b'{"test": 2432232314}'
    secret, msg = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek"
    ts = 1614265330
    good = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert verify(secret, msg, ts, body, good)
    assert not verify(secret, msg, ts, body, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA=")
    assert verify(secret, msg, ts, body,
                  f"v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= {good} v1a,abc")
    assert not verify(secret, msg, ts + 1, body, good)
    assert not verify(secret, msg, ts, body + b" ", good)


# Reports


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 0.5), percentile(values, 0.9), percentile(values, 0.99)) == (
        50.0, 90.0, 99.0)
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.99) == 3.0


def test_the_sla_report_counts_met_breached_and_escalated() -> None:
    deadline = T0 + timedelta(minutes=2)
    rows = [
        {"status": "accepted", "accepted_at": T0 + timedelta(minutes=1), "deadline_at": deadline},
        {"status": "contacted", "accepted_at": T0 + timedelta(minutes=3), "deadline_at": deadline,
         "contacted_at": T0 + timedelta(minutes=4),
         "contact_deadline_at": T0 + timedelta(minutes=8)},
        {"status": "escalated", "accepted_at": None, "deadline_at": deadline},
        {"status": "offered", "accepted_at": None, "deadline_at": deadline},
    ]
    report = sla(rows)
    assert report["accept"] == {"met": 1, "breached": 2, "escalated": 1, "met_rate": 0.3333,
                                "breached_rate": 0.6667, "escalated_rate": 0.3333}
    assert report["contact"] == {"met": 1, "breached": 0, "met_rate": 1.0}


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


def test_the_sla_clock_holds_outside_working_hours() -> None:
    shifts = parse_working_hours({"mon": ["09:00-10:01"], "tue": ["09:00-17:00"]})
    two_minutes = timedelta(minutes=2)
    # Monday 10:00 in Paris (09:00 UTC): one minute today, one minute from Tuesday 09:00.
    assert working_deadline(shifts, "Europe/Paris", T0, two_minutes) == datetime(
        2026, 1, 6, 8, 1, tzinfo=UTC)
    assert working_deadline(shifts, "UTC", T0, two_minutes) == T0 + two_minutes
    assert working_deadline(None, "Europe/Paris", T0, two_minutes) == T0 + two_minutes
    split = parse_working_hours({"mon": ["09:00-10:00", "10:00-12:00"]})
    assert working_deadline(split, "Europe/Paris", T0 - timedelta(minutes=1), two_minutes) == (
        T0 + timedelta(minutes=1))
