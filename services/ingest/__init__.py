"""ingest: the front door for leads.

Consumes: nothing.
Produces (keyed by lead id), on topic `leadrelay.leads`: `lead.received` for a new lead,
`lead.updated` when a later submission with the same email changes it, `lead.erased`, and
`signal.recorded` of buying signals (demo and quote requests, trial sign-ups); on topic
`leadrelay.signals`: `signal.recorded` of every other signal (`signal_batches.py`).
Owns: `ingest_lead` (the normalised lead, with the data key that seals its personal fields in
every event, `shared.sealing`), `ingest_submission` (each raw submission, for audit and
replay), and its outbox and processed-event tables.
HTTP: `POST /v1/leads`, `GET /v1/leads/{id}`, erasure (`DELETE /v1/leads/{id}`,
`POST /v1/erasures`), and the leads' data keys for the scorer and the router
(`POST /v1/internal/lead-keys`).
"""
