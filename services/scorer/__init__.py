"""scorer: owns each lead's score, temperature and lifecycle stage, and explains them.

Consumes (topic `leadrelay.leads`): `lead.received` and `lead.updated` (the whole profile, scored
for fit), `signal.recorded` (kept once per signal id, scored for engagement with decay) and
`lead.erased` (the lead's personal data and signals are deleted here); (topic
`leadrelay.signals`, the campaigns' lane) `signal.recorded`, by a consumer of its own (group
`<prefix>-scorer-signals`) that `LEADRELAY_SCORER_LANES` may run in a process of its own, so a
campaign never holds up a new lead's fetch, event loop or CPU. Personal fields come
sealed; they are opened with the leads' keys from ingest, and `lead.scored` seals them again.
From the router (topic `leadrelay.assignments`): `assignment.accepted` (-> SAL),
`assignment.qualified` (-> SQL), `assignment.rejected` (-> recycled) and
`assignment.disqualified` (-> disqualified), both kept with their reason code for the feedback
report, and `lead.nurture` (-> recycled).
Produces (topic `leadrelay.scores`, keyed by lead id): `lead.scored`, with the full breakdown,
whenever the temperature, the stage or what counts towards the score changes (never on a
no-op, nor when signals move only the engagement points: that score is stored, not
published; several events of a lead in one consumer batch give one, with the state they lead
to),
`lead.stage_changed` for every lifecycle transition, and `lead.erased` once the lead's data
are gone here (the router learns of erasures from this topic, after the lead's last score).
Consumes in batches (`consumer.py`): the leads of a batch are read and written back in a few
statements, each lead decided once, with the stored state and stage moves of one event at a
time. Rules are indexed (`rule_index.py`): by field value and signal type.
Decides with pure functions: `scoring.score()` against the versioned scoring model
(`scoring_model.py`, default in `default_model.yaml`) and `lifecycle.next_stage()`.
Owns: `scorer_lead_score` (each lead's profile, score, stage and next decay check),
`scorer_signal`, `scorer_scoring_model` (every published version), `scorer_stage_change`
(the lifecycle history), `scorer_rejection` and `scorer_rejection_rule` (sales' feedback), and
its outbox and processed-event tables.
Background loops: `decay-sweep` (rescores leads when decay moves them to another band) and
`scoring-model` (publishes the model file at start, then follows the model in force).
HTTP: `GET /v1/leads/{id}/score`, `GET /v1/leads/{id}/stage-history`,
`POST /v1/leads/{id}/stage`, `GET/PUT /v1/scoring-model`, `POST /v1/scoring-model/preview`,
`GET /v1/reports/rejections`.
"""
