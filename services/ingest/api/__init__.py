"""ingest's HTTP endpoints, one module per channel. Thin: read, call the service, answer."""

from __future__ import annotations

from services.ingest.api import forms, leads, privacy, signals, sources, webhooks
from services.ingest.api.dependencies import AdminDep
from services.ingest.api.route import IngestRoute
from services.ingest.models import AUDIT
from shared.audit import audit_routes

routes = [
    leads.routes, forms.routes, webhooks.routes, signals.routes, privacy.routes, sources.routes,
    audit_routes(AUDIT, AdminDep, IngestRoute),
]
