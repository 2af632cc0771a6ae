"""Telling a new broker from the same one: the epoch marker against a real broker process."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from aiokafka import AIOKafkaProducer

from leadrelay.broker import EmbeddedBroker, free_port
from shared.broker_epoch import BrokerEpoch, BrokerEpochs
from shared.kafka import build_producer
from shared.settings import ServiceSettings

pytestmark = pytest.mark.broker


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    """A broker of this test's own: it is killed and restarted."""
    with EmbeddedBroker(free_port()) as running:
        yield running


@pytest.fixture
def settings(own_broker: EmbeddedBroker) -> ServiceSettings:
    return ServiceSettings(kafka_bootstrap_servers=own_broker.bootstrap_servers,
                           kafka_topic_prefix="epochs", kafka_topic_partitions=2)


@pytest.fixture
async def producer(settings: ServiceSettings) -> AsyncIterator[AIOKafkaProducer]:
    running = build_producer(settings)
    await running.start()
    yield running
    await running.stop()


@pytest.fixture
async def epochs(
    settings: ServiceSettings, producer: AIOKafkaProducer
) -> AsyncIterator[BrokerEpochs]:
    watching = BrokerEpochs(settings, producer, read_timeout=2.0)
    yield watching
    await watching.stop()


async def test_every_service_finds_the_same_epoch_until_the_broker_is_a_new_one(
    own_broker: EmbeddedBroker, settings: ServiceSettings, producer: AIOKafkaProducer,
    epochs: BrokerEpochs,
) -> None:
    new_brokers: list[BrokerEpoch] = []
    epochs.on_new_broker(new_brokers.append)
    first = await epochs.establish()
    other_service = BrokerEpochs(settings, producer)
    try:
        assert await other_service.establish() == first
        for _ in range(3):
            assert await epochs.unchanged(first)
        assert new_brokers == [], "the first epoch of a process is no new broker"

        own_broker.restart()
        assert not await epochs.unchanged(first)
        assert epochs.current is None, "no acknowledgement is trusted until it is established"
        second = await epochs.establish()
        assert second != first
        assert new_brokers == [second]
        assert await other_service.establish() == second
        assert await epochs.unchanged(second)
    finally:
        await other_service.stop()


async def test_a_broker_that_does_not_answer_is_no_sign_of_a_new_one(
    own_broker: EmbeddedBroker, epochs: BrokerEpochs
) -> None:
    epoch = await epochs.establish()
    own_broker.kill()
    assert not await epochs.unchanged(epoch), "nothing it did not confirm can be trusted"
    assert epochs.current == epoch, "an unanswered read is not a new broker"
    own_broker.start()  # empty: memory storage
    assert not await epochs.unchanged(epoch)
    assert epochs.current is None


async def test_the_marker_reader_fetches_nothing_between_reads(epochs: BrokerEpochs) -> None:
    """Its partition is paused once read: an assigned partition left running is fetched
    again at every fetch wait, in the background, for as long as the service runs."""
    first = await epochs.establish()
    for _ in range(3):
        assert await epochs.unchanged(first)
        reader = epochs._reader
        assert reader is not None
        assert reader.paused() == {epochs.partition}
