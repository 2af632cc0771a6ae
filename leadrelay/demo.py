"""The demo: a small SDR team, a handful of sample leads, and every step printed as it happens.

A built-in receiver stands in for the SDRs' webhooks. Alice accepts her leads after two
seconds, Bruno after five, and Chloé never answers, so her lead is escalated when the SLA runs
out. The demo follows the three topics and prints each event in plain words.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from aiokafka import AIOKafkaConsumer
from fastapi import FastAPI, Request

from shared.events import Topics, decode_event
from shared.kafka import topic_partitions
from shared.kafka_security import client_security
from shared.lead_keys import KeyRing
from shared.settings import ServiceSettings


@dataclass(frozen=True)
class DemoRep:
    handle: str
    name: str
    accept_after: float | None
    """Seconds before this rep accepts an offered lead; None: never answers."""

    @property
    def email(self) -> str:
        return f"{self.handle}@demo.leadrelay.dev"


TEAM = (
    DemoRep("alice", "Alice Martin", 2.0),
    DemoRep("bruno", "Bruno Costa", 5.0),
    DemoRep("chloe", "Chloé Dubois", None),
)

SAMPLE_LEADS: list[dict[str, Any]] = [
    {"email": "ada@analytical-engines.example", "name": "Ada Lovelace",
     "company": "Analytical Engines", "country": "GB", "employee_count": 250,
     "demo_requested": True, "source": "website"},
    {"email": "grace@cobol.example", "name": "Grace Hopper", "company": "Cobol Systems",
     "country": "US", "employee_count": 1200, "demo_requested": True, "source": "linkedin"},
    {"email": "alan@bletchley.example", "name": "Alan Turing", "company": "Bletchley Labs",
     "country": "GB", "employee_count": 80, "job_title": "CTO", "source": "webinar",
     "demo_requested": True},
    {"email": "margaret@apollo.example", "name": "Margaret Hamilton", "company": "Apollo Guidance",
     "country": "US", "employee_count": 400, "source": "partner"},
    {"email": "student@gmail.com", "name": "Sam Student", "source": "newsletter"},
]


class DemoConsole:
    """Prints each step with the time since the demo started."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.lead_names: dict[str, str] = {}
        self.sdr_names: dict[str, str] = {}
        self.scores: dict[str, tuple[float, str]] = {}
        """The last score and temperature shown per lead; a repeat (a stage change) is not."""
        self.escalations = 0
        self.accepted = 0

    def say(self, what: str, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {what:<10} {text}", flush=True)

    def lead(self, lead_id: str) -> str:
        return self.lead_names.get(lead_id, lead_id[:8])

    def sdr(self, sdr_id: str | None) -> str:
        return "nobody" if sdr_id is None else self.sdr_names.get(sdr_id, sdr_id[:8])

    def show(self, event: Any) -> None:
        data = event.data
        if event.type == "lead.received":
            lead = data.lead
            self.lead_names[event.lead_id] = lead.name or lead.email
            self.say("received", f"{self.lead(event.lead_id)} ({lead.company or 'no company'})")
        elif event.type == "lead.scored":
            if self.scores.get(event.lead_id) == (data.score, data.temperature):
                return
            self.scores[event.lead_id] = (data.score, data.temperature)
            routing = "not routed, goes to nurturing" if data.temperature == "cold" else "to route"
            self.say("scored", f"{self.lead(event.lead_id)}: {data.score:g} points, "
                               f"{data.temperature} ({routing})")
        elif event.type == "lead.stage_changed":
            self.say("stage", f"{self.lead(event.lead_id)}: {data.from_stage.upper()} -> "
                              f"{data.to_stage.upper()}")
        elif event.type == "assignment.offered":
            self.say("offered", f"{self.lead(event.lead_id)} -> {self.sdr(data.sdr_id)} "
                                f"(attempt {data.attempt})")
        elif event.type == "assignment.accepted":
            self.accepted += 1
            timing = "within the SLA" if data.within_sla else "after the SLA"
            self.say("accepted", f"{self.sdr(data.sdr_id)} took {self.lead(event.lead_id)} "
                                 f"{timing}")
        elif event.type == "lead.nurture":
            self.say("nurture", f"{self.lead(event.lead_id)} goes back to marketing "
                                f"({data.reason})")
        elif event.type == "assignment.escalated":
            self.escalations += 1
            self.say("escalated", f"{self.sdr(data.from_sdr_id)} did not answer in time: "
                                  f"{self.lead(event.lead_id)} -> {self.sdr(data.to_sdr_id)}")


def receiver_app(console: DemoConsole, client: httpx.AsyncClient) -> FastAPI:
    """Stands in for the SDRs' webhooks: prints each notification and answers like a rep."""
    app = FastAPI()
    team = {rep.handle: rep for rep in TEAM}
    pending: set[asyncio.Task[None]] = set()

    async def accept_later(url: str, delay: float) -> None:
        await asyncio.sleep(delay)
        with contextlib.suppress(httpx.HTTPError):
            await client.post(url)

    @app.post("/sdr/{handle}")
    async def notification(handle: str, request: Request) -> dict[str, str]:
        body = await request.json()
        lead = body.get("lead") or {}
        who = lead.get("name") or lead.get("email") or body.get("lead_id", "?")
        rep = team.get(handle)
        deadline = str(body.get("deadline_at", "?"))[11:19]
        what = "reminder" if body.get("kind") == "reminder" else "notified"
        console.say(what, f"{rep.name if rep else handle}'s webhook: {who}, "
                          f"accept by {deadline} UTC")
        delay = rep.accept_after if rep else None
        accept_url = body.get("accept_url")
        if delay is not None and accept_url and body.get("kind", "offer") == "offer":
            task = asyncio.create_task(accept_later(accept_url, delay))
            pending.add(task)
            task.add_done_callback(pending.discard)
        return {"status": "received"}

    return app


async def follow_topics(console: DemoConsole, settings: ServiceSettings, keys: KeyRing) -> None:
    """Show every event as it is published; the leads' sealed fields opened with `keys`."""
    topics = Topics(settings.kafka_topic_prefix)
    security = client_security(settings)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                enable_auto_commit=False, **security)
    await consumer.start()
    try:
        consumer.assign(await topic_partitions(settings.kafka_bootstrap_servers, topics.all,
                                               **security))
        await consumer.seek_to_end()
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            await keys.prefetch(message.key.decode() for messages in batch.values()
                                for message in messages if message.key)
            for messages in batch.values():
                for message in messages:
                    event = decode_event(message.value, keys=keys.key_of)
                    if event is not None:
                        console.show(event)
    finally:
        await consumer.stop()


async def create_team(client: httpx.AsyncClient, router_url: str, receiver_port: int,
                      console: DemoConsole, admin_token: str) -> None:
    admin = {"Authorization": f"Bearer {admin_token}"}
    listed = await client.get(f"{router_url}/v1/sdrs", headers=admin)
    listed.raise_for_status()
    existing = {sdr["email"]: sdr for sdr in listed.json()}
    for rep in TEAM:
        sdr = existing.get(rep.email)
        if sdr is None:
            answer = await client.post(f"{router_url}/v1/sdrs", headers=admin, json={
                "name": rep.name, "email": rep.email,
                "webhook_url": f"http://127.0.0.1:{receiver_port}/sdr/{rep.handle}",
            })
            answer.raise_for_status()
            sdr = answer.json()
        console.sdr_names[sdr["id"]] = rep.name
    console.say("team", ", ".join(rep.name for rep in TEAM))


async def run_demo(ingest_url: str, router_url: str, *, receiver_port: int, admin_token: str,
                   keep_running: bool = False, timeout: float = 120.0) -> DemoConsole:
    """Run the demo against a running system; returns once a lead has been escalated.

    `admin_token` is the system's (`LEADRELAY_ADMIN_TOKEN`): the demo adds its team and posts
    its leads with it.
    """
    console = DemoConsole()
    settings = ServiceSettings()
    async with httpx.AsyncClient(timeout=10) as client:
        server = uvicorn.Server(uvicorn.Config(receiver_app(console, client), host="127.0.0.1",
                                               port=receiver_port, log_level="warning"))
        serving = asyncio.create_task(server.serve())
        keys = KeyRing(ingest_url, admin_token)
        following = asyncio.create_task(follow_topics(console, settings, keys))
        try:
            while not server.started:
                await asyncio.sleep(0.05)
            await create_team(client, router_url, receiver_port, console, admin_token)
            await asyncio.sleep(1.0)
            for lead in SAMPLE_LEADS:
                answer = await client.post(f"{ingest_url}/v1/leads", json=lead, headers={
                    "Authorization": f"Bearer {admin_token}"})
                answer.raise_for_status()
                console.lead_names[answer.json()["lead_id"]] = lead["name"]
                await asyncio.sleep(0.3)
            deadline = time.monotonic() + timeout
            while console.escalations == 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            await asyncio.sleep(3.0)
            console.say("done", f"{console.accepted} accepted, {console.escalations} escalated")
            if keep_running:
                print("The system keeps running; Ctrl-C stops it.", flush=True)
                await asyncio.Event().wait()
        finally:
            following.cancel()
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await following
            await keys.close()
            await serving
    return console
