"""The lifecycle state machine: which stage a lead may move to from the one it is in.

`lead -> mql -> sal -> sql -> opportunity -> customer` (see DOMAIN.md), plus `recycled` (back
to nurturing, with a reason; the model or an SDR may take it up again) and `disqualified`
(with a reason; final, like `customer`). Any stage before `customer` may be recycled or
disqualified. Pure: `next_stage()` decides, callers record and publish.

Who moves a lead: the scoring model makes it MQL (`lead` or `recycled` -> `mql`); the router's
events make it SAL (accepted), SQL (qualified), recycled (rejected, or sent to nurturing) or
disqualified; a CRM makes it an opportunity or a customer through the API.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import get_args

from shared.events import Stage

STAGES: tuple[Stage, ...] = get_args(Stage)

TRANSITIONS: Mapping[Stage, frozenset[Stage]] = {
    "lead": frozenset({"mql", "sal", "recycled", "disqualified"}),
    "mql": frozenset({"sal", "recycled", "disqualified"}),
    "sal": frozenset({"sql", "recycled", "disqualified"}),
    "sql": frozenset({"opportunity", "recycled", "disqualified"}),
    "opportunity": frozenset({"customer", "recycled", "disqualified"}),
    "customer": frozenset(),
    "recycled": frozenset({"mql", "sal", "disqualified"}),
    "disqualified": frozenset(),
}
"""Stage -> the stages it may move to. A lead may be accepted (SAL) before the model made it
MQL: an SDR who takes a lead has accepted it, whatever marketing's threshold said."""

NEEDS_REASON: frozenset[Stage] = frozenset({"recycled", "disqualified"})


class IllegalTransitionError(ValueError):
    """The lead cannot move from its stage to the one asked for."""

    def __init__(self, from_stage: Stage, to_stage: Stage) -> None:
        allowed = ", ".join(sorted(TRANSITIONS[from_stage])) or "none: it is final"
        super().__init__(
            f"a lead in stage {from_stage!r} cannot move to {to_stage!r} "
            f"(allowed from {from_stage!r}: {allowed})"
        )
        self.from_stage = from_stage
        self.to_stage = to_stage


def next_stage(current: Stage, wanted: Stage) -> Stage | None:
    """The stage to move to, or None when the lead is already there (nothing to do).

    Raises `IllegalTransitionError` when the state machine does not allow the move.
    """
    if wanted == current:
        return None
    if wanted not in TRANSITIONS[current]:
        raise IllegalTransitionError(current, wanted)
    return wanted


def model_makes_mql(current: Stage, *, mql: bool, fresh_activity: bool) -> bool:
    """Whether the scoring model moves the lead to MQL now.

    From `lead` as soon as the model says MQL. A recycled lead needs fresh activity too (a
    signal or a profile change since it was recycled): the score that sales just turned down
    must not hand the lead straight back to them. The model never moves a lead back.
    """
    if not mql:
        return False
    return current == "lead" or (current == "recycled" and fresh_activity)
