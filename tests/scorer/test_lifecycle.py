"""The lifecycle state machine, pure: every legal move, every refused one."""

from __future__ import annotations

import itertools

import pytest

from services.scorer.lifecycle import (
    STAGES,
    TRANSITIONS,
    IllegalTransitionError,
    model_makes_mql,
    next_stage,
)
from shared.events import Stage

FUNNEL: list[Stage] = ["lead", "mql", "sal", "sql", "opportunity", "customer"]


def test_the_funnel_moves_forward_one_stage_at_a_time() -> None:
    for current, wanted in itertools.pairwise(FUNNEL):
        assert next_stage(current, wanted) == wanted


@pytest.mark.parametrize("stage", ["lead", "mql", "sal", "sql", "opportunity", "recycled"])
def test_any_open_stage_may_be_disqualified(stage: Stage) -> None:
    assert next_stage(stage, "disqualified") == "disqualified"


@pytest.mark.parametrize("stage", ["lead", "mql", "sal", "sql", "opportunity"])
def test_any_stage_before_customer_may_be_recycled(stage: Stage) -> None:
    assert next_stage(stage, "recycled") == "recycled"


def test_a_recycled_lead_comes_back_through_mql_or_an_sdr() -> None:
    assert next_stage("recycled", "mql") == "mql"
    assert next_stage("recycled", "sal") == "sal"
    assert next_stage("lead", "sal") == "sal"


@pytest.mark.parametrize(
    ("current", "wanted"),
    [
        ("lead", "sql"), ("lead", "customer"), ("mql", "sql"), ("mql", "lead"),
        ("sal", "mql"), ("sql", "sal"), ("sql", "customer"), ("opportunity", "sql"),
        ("customer", "recycled"), ("customer", "disqualified"), ("disqualified", "mql"),
        ("disqualified", "recycled"), ("recycled", "sql"), ("recycled", "opportunity"),
    ],
)
def test_illegal_moves_are_refused_with_what_is_allowed(current: Stage, wanted: Stage) -> None:
    with pytest.raises(IllegalTransitionError) as refused:
        next_stage(current, wanted)
    assert (refused.value.from_stage, refused.value.to_stage) == (current, wanted)
    assert f"cannot move to {wanted!r}" in str(refused.value)


def test_final_stages_say_so() -> None:
    with pytest.raises(IllegalTransitionError, match="none: it is final"):
        next_stage("customer", "lead")


@pytest.mark.parametrize("stage", STAGES)
def test_staying_put_is_not_a_move(stage: Stage) -> None:
    assert next_stage(stage, stage) is None


def test_the_table_covers_every_stage_and_names_only_stages() -> None:
    assert set(TRANSITIONS) == set(STAGES)
    assert all(targets <= set(STAGES) for targets in TRANSITIONS.values())


@pytest.mark.parametrize(
    ("stage", "mql", "fresh", "moves"),
    [
        ("lead", True, False, True),
        ("lead", False, True, False),
        ("recycled", True, True, True),
        ("recycled", True, False, False),
        ("mql", True, True, False),
        ("sal", True, True, False),
        ("disqualified", True, True, False),
    ],
)
def test_the_model_makes_mql_from_lead_or_from_recycled_with_fresh_activity(
    stage: Stage, mql: bool, fresh: bool, moves: bool
) -> None:
    assert model_makes_mql(stage, mql=mql, fresh_activity=fresh) is moves
