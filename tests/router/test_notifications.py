"""Webhook delivery to a real local HTTP server: signatures, retries, Retry-After, 410, redirects,
timeouts, refused private addresses, Slack messages."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.router import delivery_repository
from services.router.delivery_signal import DeliverySignal
from services.router.models import disabled_endpoint, notification, notification_attempt, sdr
from services.router.notifications import Delivery, Notifier, _Outcome
from services.router.service import RouterContext
from services.router.signing import verify
from shared.clock import SystemClock
from tests.router.conftest import Router, router_settings, scored
from tests.router.receiver import Reply, WebhookReceiver
from tests.support import eventually


def notifier_for(router: Router, **settings: Any) -> Notifier:
    config = router_settings(router.settings.database_url, notify_backoff_seconds=1.0, **settings)
    return Notifier(router.db, router.clock, config, router.context.deliveries, jitter=lambda: 0.0)


async def offer_to(router: Router, receiver: WebhookReceiver, lead_id: str = "lead-1") -> None:
    await router.add_sdr("Ada", webhook_url=receiver.url("/ada"))
    await router.consume(scored(lead_id, clock=router.clock))


async def deliver(router: Router, notifier: Notifier) -> list[Delivery]:
    async with notifier.http_client() as client:
        return await notifier.deliver_due(client)


async def stored(router: Router) -> dict[str, Any]:
    [row] = await router.rows(notification)
    return row


async def attempts(router: Router) -> list[tuple[str, int | None]]:
    async with router.db.reading() as session:
        rows = await session.execute(
            select(notification_attempt.c.outcome, notification_attempt.c.status_code)
            .order_by(notification_attempt.c.attempt)
        )
    return [(row.outcome, row.status_code) for row in rows]


async def test_delivered_once_on_200(router: Router) -> None:
    async with WebhookReceiver() as receiver:
        await offer_to(router, receiver)
        notifier = notifier_for(router)
        [delivery] = await deliver(router, notifier)
        assert await deliver(router, notifier) == []
    assert delivery.outcome == "delivered"
    [request] = receiver.received
    assert request.path == "/ada"
    assert request.headers["content-type"] == "application/json"
    row = await stored(router)
    assert request.headers["webhook-id"] == row["message_id"]
    assert request.headers["idempotency-key"] == row["message_id"]
    assert request.headers["webhook-timestamp"] == str(int(router.clock.now().timestamp()))
    [person] = await router.rows(sdr)
    secret = router.context.secrets.decrypt(person["webhook_secret"])
    assert verify(secret, request.headers["webhook-id"],
                  int(request.headers["webhook-timestamp"]), request.raw,
                  request.headers["webhook-signature"])
    assert not verify(secret, request.headers["webhook-id"],
                      int(request.headers["webhook-timestamp"]) + 1, request.raw,
                      request.headers["webhook-signature"])
    assert request.body["type"] == "assignment.offered"
    assert request.body["lead_id"] == "lead-1"
    assert request.body["lead"] == {
        "name": "Ada Lovelace", "company": "Analytical Engines",
        "email": "lead-1@buyer.example", "phone": "+44 20 7946 0000",
        "country": None, "source": None,
    }
    assert request.body["score"] == 87.0
    assignment_id = request.body["assignment_id"]
    assert f"/v1/assignments/{assignment_id}/accept?token=" in request.body["accept_url"]
    row = await stored(router)
    assert (row["status"], row["attempts"], row["last_status"]) == ("delivered", 1, 200)
    assert row["delivered_at"] == router.clock.now()
    assert await attempts(router) == [("delivered", 200)]


async def test_retried_after_a_500_then_delivered(router: Router) -> None:
    async with WebhookReceiver([Reply(500)]) as receiver:
        await offer_to(router, receiver)
        notifier = notifier_for(router)
        [first] = await deliver(router, notifier)
        assert first.outcome == "retry"
        assert first.next_attempt_at == router.clock.now() + (timedelta(seconds=0.5))
        assert await deliver(router, notifier) == []
        router.clock.advance(1.5)
        [second] = await deliver(router, notifier)
    assert second.outcome == "delivered"
    assert len(receiver.received) == 2
    first_call, second_call = receiver.received
    assert first_call.headers["webhook-id"] == second_call.headers["webhook-id"]
    assert int(second_call.headers["webhook-timestamp"]) == int(
        first_call.headers["webhook-timestamp"]) + 1
    assert first_call.headers["webhook-signature"] != second_call.headers["webhook-signature"]
    row = await stored(router)
    assert (row["status"], row["attempts"], row["last_status"]) == ("delivered", 2, 200)
    assert await attempts(router) == [("retry", 500), ("delivered", 200)]


async def test_retry_after_is_honoured_on_429(router: Router) -> None:
    async with WebhookReceiver([Reply(429, headers={"Retry-After": "7"})]) as receiver:
        await offer_to(router, receiver)
        notifier = notifier_for(router)
        [first] = await deliver(router, notifier)
        assert first.next_attempt_at == router.clock.now() + timedelta(seconds=7)
        router.clock.advance(6.9)
        assert await deliver(router, notifier) == []
        router.clock.advance(0.1)
        [second] = await deliver(router, notifier)
    assert (first.outcome, first.status_code) == ("retry", 429)
    assert second.outcome == "delivered"
    assert len(receiver.received) == 2


async def test_gives_up_after_max_attempts_with_the_last_error(router: Router) -> None:
    async with WebhookReceiver([Reply(503), Reply(502), Reply(503)]) as receiver:
        await offer_to(router, receiver)
        notifier = notifier_for(router, notify_max_attempts=3)
        outcomes = []
        for _ in range(5):
            outcomes += [delivery.outcome for delivery in await deliver(router, notifier)]
            router.clock.advance(60)
    assert outcomes == ["retry", "retry", "failed"]
    assert len(receiver.received) == 3
    row = await stored(router)
    assert (row["status"], row["attempts"], row["last_status"]) == ("failed", 3, 503)
    assert row["last_error"] == "HTTP 503"
    assert row["next_attempt_at"] is None
    assert await attempts(router) == [("retry", 503), ("retry", 502), ("failed", 503)]


async def test_a_client_error_is_not_retried(router: Router) -> None:
    async with WebhookReceiver([Reply(404)]) as receiver:
        await offer_to(router, receiver)
        notifier = notifier_for(router)
        [delivery] = await deliver(router, notifier)
        router.clock.advance(60)
        assert await deliver(router, notifier) == []
    assert delivery.outcome == "failed"
    assert len(receiver.received) == 1


async def test_a_hanging_receiver_hits_the_timeout(router: Router) -> None:
    async with WebhookReceiver([Reply(200, delay=10)]) as receiver:
        await offer_to(router, receiver)
        notifier = notifier_for(router, notify_timeout_seconds=0.3)
        started = time.monotonic()
        [delivery] = await deliver(router, notifier)
        elapsed = time.monotonic() - started
    assert elapsed < 2
    assert len(receiver.received) == 1
    assert (delivery.outcome, delivery.status_code) == ("retry", None)
    assert delivery.error is not None and "0.3 s" in delivery.error
    row = await stored(router)
    assert row["status"] == "pending"
    assert row["last_error"] == delivery.error


async def test_an_unreachable_receiver_is_retried(router: Router) -> None:
    async with WebhookReceiver() as receiver:
        url = receiver.url("/gone")
    await router.add_sdr("Ada", webhook_url=url)
    await router.consume(scored("lead-1", clock=router.clock))
    [delivery] = await deliver(router, notifier_for(router))
    assert (delivery.outcome, delivery.status_code) == ("retry", None)
    assert delivery.error is not None and "ConnectError" in delivery.error


def live_router(router: Router) -> tuple[Router, Notifier]:
    """`router` on the system clock, and a notifier loop for it that polls only every 30 s."""
    clock = SystemClock()
    context = RouterContext.build(router.settings, router.context.outbox, clock)
    config = router_settings(router.settings.database_url, notify_poll_seconds=30)
    return (Router(router.db, router.clock, router.settings, context),
            Notifier(router.db, clock, config, context.deliveries))


async def test_the_running_loop_delivers_as_soon_as_the_offer_commits(router: Router) -> None:
    live, notifier = live_router(router)
    async with WebhookReceiver() as receiver:
        await live.add_sdr("Ada", webhook_url=receiver.url())
        loop = asyncio.create_task(notifier.run())
        try:
            await asyncio.sleep(0.3)
            assert receiver.received == []
            await live.consume(scored("lead-1", clock=router.clock))
            started = time.monotonic()
            await eventually(
                lambda: status_of(router), until="delivered".__eq__, timeout=3, interval=0.01
            )
            assert time.monotonic() - started < 1
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
    assert len(receiver.received) == 1


async def status_of(router: Router) -> str:
    return str((await stored(router))["status"])


async def test_the_signal_waits_for_the_commit_not_a_savepoint(router: Router) -> None:
    signal = DeliverySignal()
    async with router.db.transaction() as session:
        async with session.begin_nested():
            signal.wake_after_commit(session)
        assert not signal.is_set()
    assert signal.is_set()

    signal = DeliverySignal()
    with contextlib.suppress(LookupError):
        async with router.db.transaction() as session:
            signal.wake_after_commit(session)
            raise LookupError("roll back")
    assert not signal.is_set()


async def test_410_disables_the_endpoint_for_good(router: Router) -> None:
    async with WebhookReceiver([Reply(410)]) as receiver:
        await offer_to(router, receiver)
        notifier = notifier_for(router)
        [gone] = await deliver(router, notifier)
        await router.consume(scored("lead-2", clock=router.clock))
        [refused] = await deliver(router, notifier)
        url = receiver.url("/ada")
    assert (gone.outcome, gone.status_code) == ("failed", 410)
    assert refused.outcome == "failed"
    assert refused.error is not None and "410" in refused.error
    assert len(receiver.received) == 1
    [disabled] = await router.rows(disabled_endpoint)
    assert disabled["url"] == url


async def test_redirects_are_never_followed(router: Router) -> None:
    async with WebhookReceiver([Reply(307, headers={"Location": "/elsewhere"})]) as receiver:
        await offer_to(router, receiver)
        [delivery] = await deliver(router, notifier_for(router))
    assert (delivery.outcome, delivery.status_code) == ("failed", 307)
    assert [request.path for request in receiver.received] == ["/ada"]


async def test_loopback_urls_are_refused_unless_allowed(router: Router) -> None:
    async with WebhookReceiver() as receiver:
        await offer_to(router, receiver)
        [delivery] = await deliver(router, notifier_for(router, webhook_allowed_urls=""))
    assert delivery.outcome == "failed"
    assert delivery.error is not None and "not a public internet address" in delivery.error
    assert receiver.received == []


async def test_slack_gets_a_message_with_the_lead_score_why_countdown_and_accept_button(
    router: Router,
) -> None:
    async with WebhookReceiver() as receiver:
        await router.add_person("Ada", slack_webhook_url=receiver.url("/slack"))
        await router.consume(scored("lead-1", clock=router.clock, country="GB"))
        [delivery] = await deliver(router, notifier_for(router))
    assert delivery.outcome == "delivered"
    [request] = receiver.received
    assert "webhook-signature" not in request.headers
    message = request.body
    assert message["text"].startswith("New lead for you: Ada Lovelace · Analytical Engines · GB")
    assert "accept within 2 min 00 s" in message["text"]
    fields = [field["text"] for field in message["blocks"][1]["fields"]]
    assert "*Score*\n87 (hot)" in fields
    sections = [block["text"]["text"] for block in message["blocks"]
                if block["type"] == "section" and "text" in block]
    assert "*Why you*\nAda got the lead by rule default (round robin: assigned longest ago; " \
        "never assigned a lead yet)." in sections
    [button] = next(block for block in message["blocks"]
                    if block["type"] == "actions")["elements"]
    assert "/accept?token=" in button["url"]


async def test_an_offer_due_now_goes_to_the_running_loop_without_a_claim(router: Router) -> None:
    live, notifier = live_router(router)
    claims: list[int] = []
    claim = notifier.claim

    async def counted_claim(limit: int) -> list[dict[str, Any]]:
        rows = await claim(limit)
        claims.append(len(rows))
        return rows

    notifier.claim = counted_claim  # type: ignore[method-assign]
    async with WebhookReceiver() as receiver:
        await live.add_sdr("Ada", webhook_url=receiver.url())
        loop = asyncio.create_task(notifier.run())
        try:
            await eventually(lambda: asyncio.sleep(0, notifier.signal.loop_running),
                             until=True.__eq__, timeout=3)
            await asyncio.sleep(0.2)  # the loop's first look: a read, nothing is due
            await live.consume(scored("lead-1", clock=router.clock))
            await eventually(lambda: status_of(router), until="delivered".__eq__, timeout=3,
                             interval=0.01)
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
    assert claims == []  # nothing was due when the loop looked; the offer came without one
    assert len(receiver.received) == 1
    assert (await stored(router))["attempts"] == 1
    assert await attempts(router) == [("delivered", 200)]


async def test_a_leased_offer_whose_process_died_is_claimed_once_its_lease_ends(
    router: Router,
) -> None:
    router.context.deliveries.loop_running = True  # a loop that dies before sending anything
    async with WebhookReceiver() as receiver:
        await offer_to(router, receiver)
        row = await stored(router)
        assert (row["status"], row["attempts"]) == ("pending", 1)
        assert len(router.context.deliveries.take_leased(10, oldest=0.0)) == 1
        notifier = notifier_for(router)
        assert await deliver(router, notifier) == []  # still leased to the dead process
        router.clock.advance(timedelta(seconds=router.settings.notify_timeout_seconds + 11))
        [delivery] = await deliver(router, notifier)
    assert (delivery.outcome, delivery.attempt) == ("delivered", 2)
    assert len(receiver.received) == 1


async def test_notifications_rolled_back_with_their_savepoint_or_transaction_are_not_sent(
    router: Router,
) -> None:
    router.context.deliveries.loop_running = True
    async with WebhookReceiver() as receiver:
        await router.add_sdr("Ada", webhook_url=receiver.url("/ada"))
        with contextlib.suppress(LookupError):
            async with router.db.transaction() as session:
                await router.consumer().apply_fresh(  # type: ignore[attr-defined]
                    session, [scored("lead-1", clock=router.clock)])
                raise LookupError("roll back")
        assert router.context.deliveries.take_leased(10, oldest=0.0) == []
        assert await router.rows(notification) == []

        async with router.db.transaction() as session:
            with contextlib.suppress(LookupError):
                async with session.begin_nested():
                    await router.consumer().apply_fresh(  # type: ignore[attr-defined]
                        session, [scored("lead-1", clock=router.clock)])
                    raise LookupError("roll back the savepoint only")
        assert router.context.deliveries.take_leased(10, oldest=0.0) == []
        assert await router.rows(notification) == []

        async with router.db.transaction() as session, session.begin_nested():
            await router.consumer().apply_fresh(  # type: ignore[attr-defined]
                session, [scored("lead-2", clock=router.clock)])
        [leased] = router.context.deliveries.take_leased(10, oldest=0.0)
        row = await stored(router)
        assert (row["id"], row["status"], row["attempts"]) == (leased["id"], "pending", 1)


async def test_outcomes_recorded_together_are_retried_one_by_one_when_the_batch_fails(
    router: Router,
) -> None:
    async with WebhookReceiver() as receiver:
        await offer_to(router, receiver)
    notifier = notifier_for(router)
    [row] = await notifier.claim(1)
    ghost = {**row, "id": row["id"] + 1000}  # no such row: its attempt breaks a foreign key
    batches: list[int] = []
    write = notifier._write

    async def counted(session: Any, outcomes: list[Any]) -> None:
        batches.append(len(outcomes))
        await write(session, outcomes)

    notifier._write = counted  # type: ignore[method-assign]
    now = router.clock.now()
    async with asyncio.timeout(30):  # an outcome never settled would wait for good
        delivered, failed = await asyncio.gather(
            notifier._record(row, now, 5, 200, None, None),
            notifier._record(ghost, now, 5, 200, None, None),
            return_exceptions=True,
        )
    assert batches == [2, 1, 1]
    assert isinstance(delivered, Delivery) and delivered.outcome == "delivered"
    assert isinstance(failed, IntegrityError)
    assert (await stored(router))["status"] == "delivered"
    assert await attempts(router) == [("delivered", 200)]


async def test_endpoints_gone_together_are_disabled_once_each_in_url_order(
    router: Router, monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with WebhookReceiver() as receiver:
        await offer_to(router, receiver)
    notifier = notifier_for(router)
    [row] = await notifier.claim(1)
    disabled: list[str] = []
    disable_endpoint = delivery_repository.disable_endpoint

    async def noted(session: Any, url: str, *args: Any) -> None:
        disabled.append(url)
        await disable_endpoint(session, url, *args)

    monkeypatch.setattr(delivery_repository, "disable_endpoint", noted)
    now = router.clock.now()
    rows = [{**row, "url": url} for url in ("http://b.example/", "http://a.example/",
                                             "http://b.example/")]
    async with router.db.transaction() as session:
        await notifier._write(session, [
            _Outcome(gone_row, {"status": "failed"}, now, "failed", {
                "notification_id": gone_row["id"], "attempt": 1, "attempted_at": now,
                "duration_ms": 5, "outcome": "failed", "status_code": 410, "error": None,
            }, gone=True)
            for gone_row in rows
        ])
    assert disabled == ["http://a.example/", "http://b.example/"]
    assert {found["url"] for found in await router.rows(disabled_endpoint)} == set(disabled)


async def test_an_idle_loop_reads_and_claims_only_once_a_row_is_due(router: Router) -> None:
    """Polled with nothing due, the loop only reads (a claim is a write); a row nobody woke
    it for (its lease, taken by a process that died, ends) is claimed at the next poll."""
    router.context.deliveries.loop_running = True  # a loop that dies before sending anything
    notifier = notifier_for(router, notify_poll_seconds=0.05)
    claims: list[int] = []
    claim = notifier.claim

    async def counted_claim(limit: int) -> list[dict[str, Any]]:
        rows = await claim(limit)
        claims.append(len(rows))
        return rows

    notifier.claim = counted_claim  # type: ignore[method-assign]
    async with WebhookReceiver() as receiver:
        await offer_to(router, receiver)
        assert len(router.context.deliveries.take_leased(10, oldest=0.0)) == 1
        router.context.deliveries.loop_running = False
        loop = asyncio.create_task(notifier.run())
        try:
            await asyncio.sleep(0.5)  # some ten polls, the row still leased
            assert claims == []
            router.clock.advance(timedelta(seconds=router.settings.notify_timeout_seconds + 11))
            await eventually(lambda: status_of(router), until="delivered".__eq__, timeout=5)
        finally:
            loop.cancel()
            await asyncio.gather(loop, return_exceptions=True)
    assert claims == [1], "one claim, once the row was due"
