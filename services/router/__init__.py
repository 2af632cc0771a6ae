"""router: puts every hot or warm lead in front of one SDR at once, and moves it on if they wait.

Consumes (topic `leadrelay.scores`): `lead.scored`. Hot and warm leads are offered round robin
to the active SDR who was assigned longest ago; cold leads are recorded and not routed.
Produces (topic `leadrelay.assignments`, keyed by lead id): `assignment.offered` for every
offer, `assignment.accepted` when the SDR accepts it, `assignment.escalated` when the SLA to
accept lapses and the lead moves to another SDR (or to nobody, when no one else is active).
Owns: `router_sdr` (the roster), `router_lead` (the latest score of each lead it was sent,
and whether it waits for an SDR), `router_assignment` (offers; at most one active per lead),
`router_escalation`, `router_notification` and `router_notification_attempt` (the webhook
delivery queue and its log), and its outbox and processed-event tables.
Background loops: `notifier` (delivers webhooks, with retries) and `escalation-timer`
(escalates lapsed offers and routes leads that waited for an SDR).
HTTP: `POST/GET /v1/sdrs`, `GET /v1/sdrs/{id}`, `GET /v1/assignments`,
`GET /v1/assignments/{id}`, `POST /v1/assignments/{id}/accept`.
"""
