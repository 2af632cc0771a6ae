"""The scorer's use of the lifecycle: the state machine itself is `shared.lifecycle`, which the
router checks its events against; what is the scorer's own is when the model makes a lead MQL.
"""

from __future__ import annotations

from shared.events import Stage
from shared.lifecycle import (
    NEEDS_REASON,
    STAGE_AFTER_ROUTER_EVENT,
    STAGES,
    TRANSITIONS,
    IllegalTransitionError,
    next_stage,
)

__all__ = [
    "NEEDS_REASON", "STAGES", "STAGE_AFTER_ROUTER_EVENT", "TRANSITIONS",
    "IllegalTransitionError", "model_makes_mql", "next_stage",
]


def model_makes_mql(current: Stage, *, mql: bool, fresh_activity: bool) -> bool:
    """Whether the scoring model moves the lead to MQL now.

    From `lead` as soon as the model says MQL. A recycled lead needs fresh activity too (a
    signal or a profile change since it was recycled): the score that sales just turned down
    must not hand the lead straight back to them. The model never moves a lead back.
    """
    if not mql:
        return False
    return current == "lead" or (current == "recycled" and fresh_activity)
