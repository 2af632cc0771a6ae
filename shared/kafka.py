"""aiokafka clients configured the way leadrelay needs them, and topic creation.

Producers wait for every in-sync replica (`acks="all"`). The idempotent producer is a setting,
off by default because the embedded broker rejects it. Every client authenticates as
`shared.kafka_security` says (TLS, SASL). Consumers never auto-commit: the
consumer loop commits offsets only after the database transaction that applied the events.
Consumers refresh stale partition leadership at once (`shared.aiokafka_leaders`) and their
metadata every 30 s. Topics are created explicitly at start-up: the broker would otherwise
auto-create them with its own partition count on the first produce or metadata request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError, for_code

from shared import aiokafka_leaders
from shared.kafka_security import client_security
from shared.settings import ServiceSettings

logger = logging.getLogger(__name__)

aiokafka_leaders.install()


def build_producer(settings: ServiceSettings, *, client_id: str | None = None) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=client_id or f"leadrelay-{settings.service_name}",
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence,
        linger_ms=0,
        request_timeout_ms=15_000,
        retry_backoff_ms=200,
        **client_security(settings),
    )


def build_consumer(
    settings: ServiceSettings, topics: Iterable[str], *, group_id: str | None = None
) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        *topics,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=group_id or settings.consumer_group,
        client_id=f"leadrelay-{settings.service_name}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        max_poll_records=settings.kafka_max_batch,
        session_timeout_ms=10_000,
        heartbeat_interval_ms=2_000,
        retry_backoff_ms=200,
        # Leadership that moved without the client noticing is found within this long at most
        # (aiokafka's default is 5 minutes).
        metadata_max_age_ms=30_000,
        # The fetcher's routine is woken by every fetch answered, record taken, seek and
        # resume; this is only its longest sleep otherwise (aiokafka's 200 ms woke an idle
        # consumer five times a second).
        consumer_timeout_ms=1_000,
        **client_security(settings),
    )


async def ensure_topics(
    settings: ServiceSettings, topics: Iterable[str], *, attempts: int = 30
) -> None:
    """Create the topics that do not exist yet; waits for the broker for up to `attempts` tries."""
    keeper = TopicKeeper(settings, topics)
    try:
        await keeper.ensure(attempts=attempts)
    finally:
        await keeper.close()


class TopicKeeper:
    """Creates the topics that are missing, through one admin client kept from one check to
    the next (a new client per check connected twice each time: the broker's idle work)."""

    def __init__(self, settings: ServiceSettings, topics: Iterable[str]) -> None:
        self.settings = settings
        self.topics = list(topics)
        self._admin: AIOKafkaAdminClient | None = None
        self._checking = asyncio.Lock()
        """One check at a time: the runtime's loop and a broker epoch's start share a keeper."""

    async def ensure(self, *, attempts: int = 1) -> None:
        """A check: create what is missing, trying up to `attempts` times while the broker is
        not ready. A failure drops the client; the next try connects again."""
        for attempt in range(1, attempts + 1):
            try:
                async with self._checking:
                    await self._ensure()
                return
            except (KafkaConnectionError, KafkaError, OSError) as error:
                if attempt == attempts:
                    raise
                logger.warning("broker not ready (%s); retrying", type(error).__name__)
                await asyncio.sleep(min(0.2 * attempt, 2.0))

    async def _ensure(self) -> None:
        try:
            admin = await self._client()
            existing = set(await admin.list_topics())
            missing = [topic for topic in self.topics if topic not in existing]
            if missing:
                response = await admin.create_topics([
                    NewTopic(
                        name=topic,
                        num_partitions=self.settings.kafka_topic_partitions,
                        replication_factor=self.settings.kafka_replication_factor,
                        topic_configs=topic_configs(self.settings),
                    )
                    for topic in missing
                ])
                _raise_topic_errors(response)
                logger.info("created topics %s", ", ".join(missing))
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            await admin.close()

    async def _client(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            admin = AIOKafkaAdminClient(
                bootstrap_servers=self.settings.kafka_bootstrap_servers,
                request_timeout_ms=10_000, **client_security(self.settings),
            )
            try:
                await admin.start()
            except BaseException:
                await admin.close()
                raise
            self._admin = admin
        return self._admin


async def topic_partitions(
    bootstrap_servers: str, topics: Iterable[str], **security: Any
) -> list[TopicPartition]:
    """Every partition of `topics` that exists, asked of the broker: a consumer's own metadata
    covers only the topics it subscribed to (the embedded broker sends every topic anyway)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **security)
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
    finally:
        await admin.close()
    return [TopicPartition(topic["topic"], partition["partition"])
            for topic in described if topic["error_code"] == 0
            for partition in sorted(topic["partitions"], key=lambda p: p["partition"])]


def topic_configs(settings: ServiceSettings) -> dict[str, str]:
    """The per-topic configs a service creates its topics with."""
    if settings.kafka_min_insync_replicas is None:
        return {}
    return {"min.insync.replicas": str(settings.kafka_min_insync_replicas)}


def _raise_topic_errors(response: object) -> None:
    """Raise the first per-topic error of a CreateTopics response (an existing topic is fine)."""
    for topic, code, *rest in getattr(response, "topic_errors", ()):
        if code in (0, TopicAlreadyExistsError.errno):
            continue
        message = rest[0] if rest else ""
        raise for_code(code)(f"cannot create topic {topic}: {message}")


KEEP_FOREVER = {"retention.ms": "-1", "retention.bytes": "-1", "cleanup.policy": "delete"}
"""Topic settings of a record that must outlive the broker's retention (the epoch marker)."""


async def ensure_kept_topic(settings: ServiceSettings, topic: str) -> None:
    """Create `topic` (one partition, records never deleted by retention) if it is missing.

    One attempt: the caller decides how to retry. An existing topic is left as it is.
    """
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers, request_timeout_ms=10_000,
        **client_security(settings),
    )
    try:
        await admin.start()
        if topic in set(await admin.list_topics()):
            return
        response = await admin.create_topics([NewTopic(
            name=topic, num_partitions=1, replication_factor=settings.kafka_replication_factor,
            topic_configs={**topic_configs(settings), **KEEP_FOREVER},
        )])
        _raise_topic_errors(response)
        logger.info("created topic %s", topic)
    finally:
        await admin.close()
