"""Notifications to reps, managers and the marketing tool: a durable queue and its loop.

An offer writes its notification row in the offer's own transaction, so an offer is never
committed without its notification, nor the reverse. `Notifier.run` claims due rows in a
short transaction (leasing them rather than holding locks), POSTs each one outside any
transaction, then records the outcome: delivered on a 2xx, retried with exponential backoff
and jitter on a network error, a timeout, a 5xx, 408 or 429 (a `Retry-After` header wins over
the backoff), given up after `notify_max_attempts` or at once on any other status; `410 Gone`
disables the URL for good. Redirects are never followed. Delivery is at least once: generic
webhooks are signed with Standard Webhooks, and `webhook-id` stays the same across retries
while the timestamp and signature are fresh on each attempt. Slack-compatible channels get a
Block Kit message. Each call goes through the SSRF guard (`shared.outbound`): a URL that does
not resolve to public addresses only is refused unless `LEADRELAY_WEBHOOK_ALLOWED_URLS` names
it, and the call connects to the address that was checked. Secrets are decrypted only to send
(`services.router.channels`).

The loop sleeps until the next row is due, at most `notify_poll_seconds`; `DeliverySignal`
wakes it as soon as a transaction that queued a notification commits. When the poll, not a
wake-up, ends the sleep, it claims (a write) only if the read of the next due row says one
is. Outcomes of deliveries that finish together are recorded together (one transaction, one
statement per table), and the endpoints disabled by a `410` are looked up once per claimed
batch.

When an attempt is retried and how long a claim lasts is `services.router.delivery_policy`;
the Slack message `services.router.slack_messages`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from opentelemetry.trace import Span, SpanKind
from sqlalchemy.ext.asyncio import AsyncSession

from services.router import delivery_repository, roster_repository, signing
from services.router.channels import SLACK_PREFIX
from services.router.delivery_policy import (
    LEASE_MARGIN_SECONDS,
    Outcome,
    notification_lease,
    outcome_of,
    parse_retry_after,
    retry_delay,
)
from services.router.delivery_signal import DeliverySignal
from services.router.settings import RouterSettings
from shared import outbound, tracing
from shared.clock import Clock
from shared.db import Database
from shared.encryption import SecretBox, UndecryptableSecretError
from shared.http_transport import DirectClient, HttpClient, lean_transport
from shared.outages import OutageLog, is_outage
from shared.outbound import DestinationPolicy, RefusedDestinationError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Delivery:
    """The result of one attempt to deliver one notification."""

    notification_id: int
    attempt: int
    outcome: Outcome
    status_code: int | None
    error: str | None
    next_attempt_at: datetime | None


@dataclass(frozen=True)
class _Outcome:
    """One attempt's outcome, waiting to be recorded with the others that finished with it."""

    row: dict[str, Any]
    values: dict[str, Any]
    at: datetime
    outcome: Outcome
    attempt: dict[str, Any]
    gone: bool


class Notifier:
    """Delivers queued notifications; run it as the `notifier` background loop."""

    def __init__(
        self,
        db: Database,
        clock: Clock,
        settings: RouterSettings,
        signal: DeliverySignal,
        *,
        jitter: Callable[[], float] = random.random,
        on_failure: Callable[[str], None] | None = None,
        secrets: SecretBox | None = None,
        destinations: DestinationPolicy | None = None,
    ) -> None:
        self.on_failure = on_failure
        self.secrets = secrets or SecretBox.from_setting(settings.encryption_keys)
        self.destinations = destinations or DestinationPolicy(settings.allowed_webhook_urls)
        self.db = db
        self.clock = clock
        self.settings = settings
        self.signal = signal
        self.jitter = jitter
        self._outcomes: list[tuple[_Outcome, asyncio.Future[None]]] = []
        self._recorder: asyncio.Task[None] | None = None

    def http_client(self) -> DirectClient:
        """Redirects are not followed, cookies not kept (`shared.http_transport`)."""
        return DirectClient(
            lean_transport(limits=httpx.Limits(
                max_connections=self.settings.notify_concurrency,
                max_keepalive_connections=self.settings.notify_concurrency)),
            timeout=httpx.Timeout(self.settings.notify_timeout_seconds),
            headers={"User-Agent": "leadrelay-router"},
        )

    async def run(self) -> None:
        in_flight: set[asyncio.Task[Delivery]] = set()
        outage = OutageLog("notifier")
        loop = asyncio.get_running_loop()
        claim_at = loop.time()
        async with self.http_client() as client:
            self.signal.loop_running = True
            try:
                while True:
                    try:
                        for row in self.signal.take_leased(
                            self.settings.notify_concurrency - len(in_flight),
                            oldest=loop.time() - LEASE_MARGIN_SECONDS / 2,
                        ):
                            self._start(client, row, in_flight)
                        if self.signal.claim_requested or loop.time() >= claim_at:
                            requested = self.signal.claim_requested
                            self.signal.claim_requested = False
                            room = self.settings.notify_concurrency - len(in_flight)
                            # Polled, not woken: claim (a write) only once a row is due.
                            wait = None if requested else await self._seconds_until_due()
                            if room > 0 and (wait is None or wait <= 0):
                                for row in await self.claim(room):
                                    self._start(client, row, in_flight)
                                wait = None
                            if wait is None:
                                wait = await self._seconds_until_due()
                            claim_at = loop.time() + wait
                        outage.recovered()
                        pause = max(0.0, claim_at - loop.time())
                    except Exception as error:
                        if not is_outage(error):
                            raise
                        pause = outage.failed(error)
                        claim_at = loop.time() + pause
                    await self.signal.wait(pause)
            finally:
                self.signal.loop_running = False
                for task in in_flight:
                    task.cancel()
                await asyncio.gather(*in_flight, return_exceptions=True)

    def _start(
        self, client: HttpClient, row: dict[str, Any], in_flight: set[asyncio.Task[Delivery]]
    ) -> None:
        task = asyncio.create_task(self.deliver(client, row))
        in_flight.add(task)

        def finished(done: asyncio.Task[Delivery]) -> None:
            in_flight.discard(done)
            failure = None if done.cancelled() else done.exception()
            if failure is not None and is_outage(failure):
                logger.warning("notifier: delivery %s not recorded (database unavailable); "
                               "it is claimed again when its lease ends", row["id"])
            elif failure is not None:
                logger.error("notifier: delivery %s failed", row["id"], exc_info=failure)
            if len(in_flight) == self.settings.notify_concurrency - 1:
                self.signal.set()

        task.add_done_callback(finished)

    async def _seconds_until_due(self) -> float:
        async with self.db.reading() as session:
            due = await delivery_repository.next_notification_due(session)
        poll = self.settings.notify_poll_seconds
        if due is None:
            return poll
        return max(0.0, min(poll, (due - self.clock.now()).total_seconds()))

    async def claim(self, limit: int) -> list[dict[str, Any]]:
        """Lease up to `limit` due notifications for one attempt each."""
        now = self.clock.now()
        lease = notification_lease(self.settings)
        async with self.db.transaction() as session:
            rows = await delivery_repository.claim_due_notifications(
                session, now, limit, lease_until=now + lease
            )
            disabled = await delivery_repository.disabled_among(
                session, {row["url"] for row in rows})
        for row in rows:
            row["disabled"] = row["url"] in disabled
        return rows

    async def deliver_due(self, client: HttpClient) -> list[Delivery]:
        """Claim what is due and deliver it all; returns once every attempt is recorded."""
        rows = await self.claim(self.settings.notify_concurrency)
        return list(await asyncio.gather(*(self.deliver(client, row) for row in rows)))

    async def deliver(self, client: HttpClient, row: dict[str, Any]) -> Delivery:
        """POST one claimed notification and record the outcome, in a span that is a child
        of the one that queued it (`shared.tracing`)."""
        span = tracing.start_span(
            f"router notify {row['kind']}", row.get("traceparent"), SpanKind.CLIENT,
            {"leadrelay.notification.kind": row["kind"], "leadrelay.channel": row["channel"],
             "leadrelay.notification.attempt": int(row["attempts"] or 0)})
        try:
            delivery = await self._deliver(client, row, span)
        except BaseException as error:
            tracing.end_span(span, error)
            raise
        if span is not None and delivery.status_code is not None:
            span.set_attribute("http.response.status_code", delivery.status_code)
        tracing.end_span(span, failed=delivery.outcome != "delivered")
        return delivery

    async def _deliver(
        self, client: HttpClient, row: dict[str, Any], span: Span | None
    ) -> Delivery:
        started = asyncio.get_running_loop().time()
        attempted_at = self.clock.now()
        status_code: int | None = None
        retry_after: float | None = None
        error: str | None = None
        try:
            disabled = row.get("disabled")
            if disabled is None:
                async with self.db.reading() as session:
                    disabled = await delivery_repository.is_disabled(session, row["url"])
            if disabled:
                raise RefusedDestinationError("the endpoint answered 410 Gone before")
            url, secret = await self._target(row)
            destination = await self.destinations.check(url)
            body = json.dumps(row["payload"], separators=(",", ":")).encode()
            message_id = row["message_id"] or f"msg_router_{row['id']}"
            headers = {
                "Content-Type": "application/json",
                "Idempotency-Key": message_id,
                "X-Leadrelay-Event": str(row["payload"].get("type", "")),
            }
            traceparent = tracing.traceparent_of(span) if span is not None else row.get(
                "traceparent")
            if traceparent:
                headers["traceparent"] = traceparent
            if row["channel"] == "generic":
                headers |= signing.headers(
                    secret, message_id, int(attempted_at.timestamp()), body
                )
            async with asyncio.timeout(self.settings.notify_timeout_seconds):
                response = await outbound.post(client, destination, content=body,
                                               headers=headers)
            status_code = response.status_code
            if not response.is_success:
                answer = response.text[:200].strip()
                error = f"HTTP {status_code}: {answer}" if answer else f"HTTP {status_code}"
                retry_after = parse_retry_after(response.headers.get("retry-after"), attempted_at)
        except (RefusedDestinationError, UndecryptableSecretError) as refused:
            status_code, error = 0, f"refused: {refused}"
        except TimeoutError:
            error = f"no answer within {self.settings.notify_timeout_seconds:g} s"
        except httpx.TimeoutException as failure:
            error = f"timed out ({type(failure).__name__})"
        except httpx.HTTPError as failure:
            error = f"{type(failure).__name__}: {failure}"[:500]
        duration_ms = int((asyncio.get_running_loop().time() - started) * 1000)
        return await self._record(row, attempted_at, duration_ms, status_code, error, retry_after)

    async def _target(self, row: dict[str, Any]) -> tuple[str, str | None]:
        """Where `row` goes and the secret that signs it, decrypted from the person's row
        (read now if the row came without it) or, for the nurture webhook, the settings."""
        if row["sdr_id"] is None:
            return row["url"], self.settings.nurture_webhook_secret or None
        if "sdr_webhook_secret" not in row:
            async with self.db.reading() as session:
                person = await roster_repository.find_sdr(session, row["sdr_id"])
            row["sdr_webhook_secret"] = person["webhook_secret"] if person else None
            row["sdr_slack_webhook_url"] = person["slack_webhook_url"] if person else None
        if row["url"].startswith(SLACK_PREFIX):
            slack_url = self.secrets.decrypt_optional(row["sdr_slack_webhook_url"])
            if slack_url is None:
                raise RefusedDestinationError("the person no longer has a Slack webhook")
            return slack_url, None
        return row["url"], self.secrets.decrypt_optional(row["sdr_webhook_secret"])

    async def _record(
        self,
        row: dict[str, Any],
        attempted_at: datetime,
        duration_ms: int,
        status_code: int | None,
        error: str | None,
        retry_after: float | None,
    ) -> Delivery:
        attempt: int = row["attempts"]
        outcome = outcome_of(status_code, attempt, self.settings.notify_max_attempts)
        if status_code == 0:
            status_code = None
        now = self.clock.now()
        next_attempt_at: datetime | None = None
        values: dict[str, Any] = {"last_status": status_code, "last_error": error}
        if outcome == "delivered":
            values.update(status="delivered", delivered_at=now, next_attempt_at=None)
        elif outcome == "failed":
            values.update(status="failed", next_attempt_at=None)
        else:
            delay = retry_delay(
                attempt,
                base=self.settings.notify_backoff_seconds,
                cap=self.settings.notify_max_backoff_seconds,
                retry_after=retry_after,
                jitter=self.jitter(),
            )
            next_attempt_at = now + timedelta(seconds=delay)
            values.update(next_attempt_at=next_attempt_at)
        await self._store(_Outcome(row, values, now, outcome, {
            "notification_id": row["id"],
            "attempt": attempt,
            "attempted_at": attempted_at,
            "duration_ms": duration_ms,
            "outcome": outcome,
            "status_code": status_code,
            "error": error,
        }, gone=status_code == 410))
        if outcome == "failed":
            if self.on_failure is not None:
                self.on_failure(str(row["channel"]))
            logger.warning(
                "notification %s (%s) given up after %d attempts: %s",
                row["id"], row["channel"], attempt, error,
            )
        return Delivery(row["id"], attempt, outcome, status_code, error, next_attempt_at)

    async def _store(self, outcome: _Outcome) -> None:
        """Record `outcome`; returns once it is committed. Outcomes arriving while a commit
        runs are recorded together by the next one."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._outcomes.append((outcome, done))
        if self._recorder is None or self._recorder.done():
            self._recorder = asyncio.create_task(self._record_waiting())
        await asyncio.shield(done)

    async def _record_waiting(self) -> None:
        while self._outcomes:
            batch, self._outcomes = self._outcomes, []
            error = await self._record_outcomes(batch)
            if error is not None and len(batch) > 1 and not is_outage(error):
                # One outcome must not undo the others: their posts were sent, and an outcome
                # lost would be a second notification once the lease ends. Record each alone.
                for item in batch:
                    await self._record_outcomes([item])

    async def _record_outcomes(
        self, batch: list[tuple[_Outcome, asyncio.Future[None]]]
    ) -> Exception | None:
        """Record `batch` in one transaction and settle its futures; the error, if it failed
        and its futures were left for a retry (several outcomes, not an outage)."""
        try:
            async with self.db.transaction() as session:
                await self._write(session, [outcome for outcome, _ in batch])
        except Exception as error:  # noqa: BLE001 - each waiting delivery gets the error
            if len(batch) > 1 and not is_outage(error):
                return error
            for _, done in batch:
                if not done.done():
                    done.set_exception(error)
            return error
        for _, done in batch:
            if not done.done():
                done.set_result(None)
        return None

    async def _write(self, session: AsyncSession, outcomes: list[_Outcome]) -> None:
        await delivery_repository.finish_attempts(
            session, [(outcome.row["id"], outcome.values) for outcome in outcomes]
        )
        gone = {outcome.row["url"]: outcome.at for outcome in outcomes if outcome.gone}
        for url in sorted(gone):  # one order for every instance: no deadlock on the inserts
            await delivery_repository.disable_endpoint(session, url, gone[url], "410 Gone")
        await delivery_repository.mark_all_notified(session, {
            outcome.row["assignment_id"]: outcome.at for outcome in outcomes
            if outcome.outcome == "delivered" and outcome.row["kind"] == "offer"
            and outcome.row["assignment_id"]
        })
        await delivery_repository.record_attempts(
            session, [outcome.attempt for outcome in outcomes])
