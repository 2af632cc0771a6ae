"""The lead lifecycle, once for every service: its stages, the moves between them, and the stage
each of the router's events moves a lead to.

`lead -> mql -> sal -> sql -> opportunity -> customer` (see DOMAIN.md), plus `recycled` (back
to nurturing, with a reason; the model or an SDR may take it up again) and `disqualified`
(with a reason; final, like `customer`). Any stage before `customer` may be recycled or
disqualified. Pure: `next_stage()` decides, callers record and publish.

Who moves a lead: the scoring model makes it MQL (`lead` or `recycled` -> `mql`); the router's
events make it SAL (accepted), SQL (qualified) or recycled (rejected, disqualified by an SDR,
sent to nurturing): `STAGE_AFTER_ROUTER_EVENT`. An SDR's disqualification hands the lead back
to marketing (`assignment.disqualified`, then `lead.nurture`), so it recycles the lead, its
reason code kept; only a CRM, through the scorer's API, makes a lead `disqualified` for good.
The scorer applies these moves; the router's tests replay what it publishes through
`stages_after()`, so the two cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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

STAGE_AFTER_ROUTER_EVENT: Mapping[str, Stage] = {
    "assignment.accepted": "sal",
    "assignment.qualified": "sql",
    "assignment.rejected": "recycled",
    "assignment.disqualified": "recycled",
    "lead.nurture": "recycled",
}
"""The router's event types that move a lead, and where to. Its other events (offered,
contacted, escalated) leave the stage as it is."""


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


def stages_after(start: Stage, event_types: Iterable[str]) -> list[Stage]:
    """The stage after each of the router's events, applied in order from `start`.

    Raises `IllegalTransitionError` at the first move the state machine refuses.
    """
    stage, stages = start, []
    for event_type in event_types:
        wanted = STAGE_AFTER_ROUTER_EVENT.get(event_type)
        if wanted is not None:
            stage = next_stage(stage, wanted) or stage
        stages.append(stage)
    return stages
