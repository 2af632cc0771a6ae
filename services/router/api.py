"""router's HTTP endpoints. Thin: authorise, parse, call the service in one transaction, answer.

Auth: `Authorization: Bearer <token>`, an admin token (`LEADRELAY_ADMIN_TOKEN`, checked by
`shared.auth`) or one of a person's own tokens (`tokens`). A signed `?token=` on an assignment
action works for that assignment and action only, until it expires (the links in
notifications, `action_links`); elsewhere it is no credential (`401`). Assignments a caller
may not see are a 404.

The endpoints are in `roster_api` (roster and rules), `assignments_api` (assignments, the queue,
hand-overs) and `reports_api`; what they share (the context, the caller, error responses) in
`api_dependencies`, re-exported here where the other route modules long found it.
"""

from __future__ import annotations

from fastapi import APIRouter

from services.router import assignments_api, reports_api, roster_api
from services.router.api_dependencies import ERRORS as ERRORS
from services.router.api_dependencies import PROBLEM as PROBLEM
from services.router.api_dependencies import AdminDep as AdminDep
from services.router.api_dependencies import ContextDep as ContextDep
from services.router.api_dependencies import PrincipalDep as PrincipalDep
from services.router.api_dependencies import get_context as get_context
from services.router.api_dependencies import get_principal as get_principal
from services.router.api_dependencies import may_see as may_see
from services.router.api_dependencies import parse_document as parse_document
from services.router.api_dependencies import require_admin as require_admin
from services.router.assignments_api import assignment_view as assignment_view

routes = APIRouter(prefix="/v1")
routes.include_router(roster_api.routes)
routes.include_router(assignments_api.routes)
routes.include_router(reports_api.routes)
