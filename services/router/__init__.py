"""router: decides who calls each lead, makes sure they do within the SLA, and proves it.

Consumes `lead.scored` and `lead.erased` (topic `leadrelay.scores`: the scorer passes erasures
on after the lead's last score, so none is still on its way when the router erases; an erased
lead's open assignment is closed as `erased` and the lead is never offered again). Hot
and warm leads are routed by an ordered, versioned rule set (first match wins: a pool, a
strategy among round robin, weighted fairness, least loaded and account owner, a fallback
pool, follow-the-sun pools) to an eligible rep: in working hours in their own timezone, not
out of office, available, under capacity, speaking the lead's language, covering its country
and its segment (a rep without hours of their own works their team's).
Every decision is stored with the rule, its version, each pool's candidates, exclusions,
scores and tie-break. Cold leads go to nurturing.
Produces (topic `leadrelay.assignments`, keyed by lead id): `assignment.offered`,
`.accepted`, `.contacted`, `.qualified` (BANT; then a second routing into the AE pool),
`.rejected` (re-offered at once), `.disqualified` (back to nurturing), `.escalated`, and
`lead.nurture`.
Owns: `router_sdr` (everyone on the roster: SDRs, AEs, managers), `router_team`,
`router_membership`, `router_rule_set`, `router_account_owner`, `router_lead`,
`router_assignment`, `router_escalation`, `router_notification` and
`router_notification_attempt` (delivery queue and log), `router_disabled_endpoint`,
`router_handover` (qualified leads waiting for an eligible AE), `router_roster_state` (the
counters that keep each instance's roster cache current), and its outbox and processed-event
tables. `lead.scored` is applied a batch at a time (`consumer.RouterConsumer`), with the
outcome of one event at a time.
Background loops: `notifier` (signed webhooks and Slack messages, with retries) and
`escalation-timer` (reminders, lapsed offers -> re-offer or the team queue, missed contact
deadlines, leads waiting for an eligible rep, hand-overs waiting for an AE), by the
database's clock.
HTTP: roster (`/v1/people`, `/v1/teams`, `/v1/roster/import`, `/v1/sdrs`), rules
(`/v1/rules`), assignments (`/v1/assignments...`, `/decision`, `/deliveries`, `/accept`,
`/contacted`, `/qualify`, `/reject`, `/disqualify`), hand-overs (`/v1/handovers`), the
shared queue (`/v1/queue`), reports
(`/v1/reports/speed-to-lead`, `/sla`, `/fairness`). See `api.py` for who may call what.
"""
