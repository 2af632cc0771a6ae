"""scorer: ranks each lead so the sales team calls the best first.

Consumes (topic `leadrelay.leads`): `lead.received` and `lead.updated`; both carry the whole
lead profile, which is scored against the configured scoring model (`scoring_model.py`,
default in `default_model.yaml`).
Produces (topic `leadrelay.scores`, keyed by lead id): `lead.scored`, the first time a lead is
scored and whenever its score, temperature or breakdown changes; never for an update that
changes nothing the model looks at.
Owns: `scorer_lead_score` (each lead's latest profile and score), and its outbox and
processed-event tables.
HTTP: `GET /v1/leads/{id}/score`.
"""
