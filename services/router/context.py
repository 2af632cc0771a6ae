"""What routing needs besides a session (`RouterContext`), and what a routing decision and
an offer are (`Routing`, `Offer`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import RowMapping

from services.router.action_links import LINK_PURPOSE, claim_subject, link_expiry, link_token
from services.router.channels import (
    ChannelKeeper,
)
from services.router.delivery_signal import DeliverySignal
from services.router.roster_cache import RosterCache, RoutingState
from services.router.routing import (
    Rep,
)
from services.router.rules import Rule, RuleSet
from services.router.settings import RouterSettings
from shared.clock import Clock
from shared.encryption import SecretBox
from shared.erasure import WalScrubber
from shared.lead_keys import KeyRing
from shared.metrics import ServiceMetrics
from shared.outbound import DestinationPolicy
from shared.outbox import Outbox

PRODUCER = "router"


class RouterMetrics:
    """router's own Prometheus metrics (labels never carry personal data)."""

    def __init__(self, metrics: ServiceMetrics) -> None:
        self.assignments = metrics.counter(
            "router_assignments_total", "Leads offered to a rep", ["role", "strategy"])
        self.escalations = metrics.counter(
            "router_escalations_total", "Offers escalated", ["reason"])
        self.sla_breaches = metrics.counter(
            "router_sla_breaches_total", "SLA deadlines missed", ["deadline"])
        self.delivery_failures = metrics.counter(
            "router_delivery_failures_total", "Notifications given up or refused", ["channel"])
        self.decision_seconds = metrics.histogram(
            "router_decision_seconds", "Time to take one routing decision", [],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.05, 0.1))


@dataclass(frozen=True)
class RouterContext:
    """What routing needs besides a session: where events go, the time, the settings."""

    outbox: Outbox
    clock: Clock
    settings: RouterSettings
    deliveries: DeliverySignal
    metrics: RouterMetrics
    secrets: SecretBox
    """Encrypts and decrypts the roster's webhook secrets and Slack URLs."""
    destinations: DestinationPolicy
    """Which webhook URLs may be registered and called (SSRF guard)."""
    rule_cache: dict[int, RuleSet] = field(default_factory=dict)
    """Parsed rule sets by version (versions are immutable)."""
    roster_cache: RosterCache = field(default_factory=RosterCache)
    """The roster as this process last saw it (see `services.router.roster_cache`)."""
    keyring: KeyRing | None = None
    """The leads' data keys (dropped at their erasure)."""
    scrubber: WalScrubber | None = None
    """Empties SQLite's write-ahead log after an erasure."""

    @classmethod
    def build(
        cls, settings: RouterSettings, outbox: Outbox, clock: Clock,
        metrics: ServiceMetrics | None = None, *, secrets: SecretBox | None = None,
        destinations: DestinationPolicy | None = None, keyring: KeyRing | None = None,
        scrubber: WalScrubber | None = None,
    ) -> RouterContext:
        """The context of `settings`; `EncryptionKeyError` when they hold no encryption key."""
        return cls(
            outbox=outbox, clock=clock, settings=settings, deliveries=DeliverySignal(),
            metrics=RouterMetrics(metrics or ServiceMetrics("router")),
            secrets=secrets or SecretBox.from_setting(settings.encryption_keys),
            destinations=destinations or DestinationPolicy(settings.allowed_webhook_urls),
            keyring=keyring, scrubber=scrubber,
        )

    @property
    def public_base_url(self) -> str:
        return self.settings.public_base_url

    @property
    def channels(self) -> ChannelKeeper:
        return ChannelKeeper(self.secrets, self.destinations)

    @property
    def action_keys(self) -> list[bytes]:
        """Keys of the action links, newest first (derived from the encryption keys)."""
        return self.secrets.signing_keys(LINK_PURPOSE)

    def action_url(self, assignment_id: str, deadline_at: datetime, action: str = "accept") -> str:
        """A link for `action` on the assignment, working until its deadline and the grace."""
        expires_at = link_expiry(deadline_at, self.settings.action_link_grace_seconds)
        token = link_token(self.action_keys, assignment_id, action, expires_at)
        return f"{self.public_base_url}/v1/assignments/{assignment_id}/{action}?token={token}"

    def claim_url(self, lead_id: str, person_id: str, sent_at: datetime) -> str:
        """A link by which `person_id` claims the queued lead, working `claim_link_seconds`."""
        expires_at = sent_at + timedelta(seconds=self.settings.claim_link_seconds)
        token = link_token(self.action_keys, claim_subject(lead_id, person_id), "claim",
                           expires_at)
        return f"{self.public_base_url}/v1/queue/{lead_id}/claim?person={person_id}&token={token}"

    def sla(self, temperature: str, role: str, rule: Rule | None) -> tuple[timedelta, timedelta]:
        """(time to accept, time to first contact) for a lead."""
        settings = self.settings
        if role == "ae":
            accept, contact = settings.sla_ae_accept_seconds, settings.sla_ae_contact_seconds
        elif rule is not None and rule.sla is not None:
            accept, contact = rule.sla.accept_seconds, rule.sla.contact_seconds
        elif temperature == "hot":
            accept, contact = settings.sla_hot_accept_seconds, settings.sla_hot_contact_seconds
        else:
            accept, contact = settings.sla_warm_accept_seconds, settings.sla_warm_contact_seconds
        if settings.sla_accept_seconds is not None and role == "sdr":
            accept = settings.sla_accept_seconds
        return timedelta(seconds=accept), timedelta(seconds=contact)


@dataclass(frozen=True)
class Offer:
    """An assignment just offered to a rep."""

    assignment_id: str
    lead_id: str
    sdr_id: str
    attempt: int
    deadline_at: datetime


@dataclass
class Routing:
    """The outcome of routing one lead: the offer made (or None) and why."""

    offer: Offer | None
    rule: Rule
    rules_version: str
    pools: list[dict[str, Any]] = field(default_factory=list)
    team_id: str | None = None
    people: dict[str, RowMapping] = field(default_factory=dict)
    """The roster rows read to decide, by id (so offering needs no second read)."""
    rep: Rep | None = None
    """The chosen rep as routing saw them: with their team's hours when they have none."""
    earlier_attempts: list[dict[str, Any]] = field(default_factory=list)
    """Earlier tries that found nobody eligible (a hand-over that waited for an AE)."""
    summary: str | None = None
    """Who got the lead and why, in plain words (`services.router.explanations`)."""

    @property
    def decision(self) -> dict[str, Any]:
        found = {
            "rule_id": self.rule.id, "rules_version": self.rules_version, "pools": self.pools,
            "chosen": self.offer.sdr_id if self.offer else None,
        }
        if self.earlier_attempts:
            found["earlier_attempts"] = self.earlier_attempts
        if self.summary:
            found["summary"] = self.summary
        return found


@dataclass
class RosterSnapshot:
    """What a transaction that routes many leads (the timer's batches) passes to `decide`.

    The transaction's `RoutingState` (see `services.router.roster_cache`) holds the roster and
    keeps it current as leads are handed out (`offer_lead` records each offer); this only
    remembers releases made before the first decision took the state.
    """

    state: RoutingState | None = None
    pending: list[tuple[str, datetime | None]] = field(default_factory=list)

    def bind(self, state: RoutingState) -> None:
        if self.state is None:
            self.state = state
            for rep_id, paused_until in self.pending:
                state.released(rep_id, paused_until)
            self.pending.clear()

    def assigned(self, rep_id: str, now: datetime) -> None:
        """Nothing to do: `offer_lead` told the routing state."""

    def released(self, rep_id: str, paused_until: datetime | None = None) -> None:
        if self.state is not None:
            self.state.released(rep_id, paused_until)
        else:
            self.pending.append((rep_id, paused_until))
