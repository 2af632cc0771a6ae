"""`shared.kafka.TopicKeeper`: the runtime's check that the topics exist, every
`kafka_topic_check_seconds`, through one admin client kept from one check to the next."""

from __future__ import annotations

from typing import ClassVar

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from leadrelay.broker import EmbeddedBroker, free_port, wait_for_port
from shared.kafka import TopicKeeper
from shared.settings import ServiceSettings

pytestmark = pytest.mark.broker


class SampleSettings(ServiceSettings):
    service_name: ClassVar[str] = "sample"


async def listed(bootstrap_servers: str) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def test_the_keeper_checks_through_one_client_and_connects_again_to_a_new_broker() -> None:
    port = free_port()
    settings = SampleSettings(kafka_bootstrap_servers=f"127.0.0.1:{port}",
                              kafka_topic_prefix="keeper")
    keeper = TopicKeeper(settings, settings.topics.all)
    with EmbeddedBroker(port):
        wait_for_port("127.0.0.1", port)
        await keeper.ensure()
        client = keeper._admin
        await keeper.ensure()
        assert client is not None and keeper._admin is client  # no new connection per check
        assert set(settings.topics.all) <= await listed(settings.kafka_bootstrap_servers)
    try:
        with EmbeddedBroker(port):  # a new broker, without the topics, on the same address
            wait_for_port("127.0.0.1", port)
            failures = 0
            for _ in range(5):
                try:
                    await keeper.ensure()
                    break
                except Exception:  # noqa: BLE001 - the old connection's end, at most once
                    failures += 1
            assert failures <= 1
            assert set(settings.topics.all) <= await listed(settings.kafka_bootstrap_servers)
    finally:
        await keeper.close()
    assert keeper._admin is None
