"""The Apache Kafka harness: a single broker and the session's 3-broker cluster, records round
tripping through them, topics created by the services' code with replication 3 and two replicas
in sync, and a killed leader's partitions served by the others until it is back."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from leadrelay.broker import wait_for_port
from leadrelay.harness.kafka import KafkaCluster
from shared.kafka import ensure_topics
from shared.settings import ServiceSettings
from tests.kafka_fixtures import SecureKafka, kafka_unavailable
from tests.support import eventually

pytestmark = [pytest.mark.kafka, pytest.mark.broker]


class HarnessSettings(ServiceSettings):
    service_name: ClassVar[str] = "harness"


async def round_trip(
    bootstrap_servers: str, topic: str, values: list[bytes], *, partition: int = 0,
    **security: Any,
) -> list[bytes]:
    """Produce `values` idempotently with acks=all to `partition` of `topic`; read them back."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap_servers, acks="all",
                                enable_idempotence=True, **security)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, partition=partition)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False,
                                **security)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, partition)])
        await consumer.seek_to_beginning()
        read: list[bytes] = []
        async with asyncio.timeout(30):
            while len(read) < len(values):
                batch = await consumer.getmany(timeout_ms=500)
                read.extend(record.value for records in batch.values() for record in records)
        return read
    finally:
        await consumer.stop()


async def create_topic(kafka: SecureKafka, topic: str, partitions: int = 6) -> None:
    settings = HarnessSettings(
        kafka_topic_partitions=partitions,
        **{name.removeprefix("LEADRELAY_").lower(): value
           for name, value in kafka.service_env().items()},
    )
    await ensure_topics(settings, [topic])


async def leaders(kafka: SecureKafka, topic: str) -> dict[int, int]:
    """Partition -> leading node id (-1: none), as the cluster's metadata has it now."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.cluster.internal_bootstrap_servers)
    await admin.start()
    try:
        [described] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return {partition["partition"]: partition["leader"] for partition in described["partitions"]}


def test_a_single_broker_starts_round_trips_records_and_stops(tmp_path: Path) -> None:
    if reason := kafka_unavailable():
        pytest.skip(reason)
    with KafkaCluster(1) as cluster:
        [broker] = cluster.brokers
        admin_settings = HarnessSettings(kafka_bootstrap_servers=cluster.bootstrap_servers)
        asyncio.run(ensure_topics(admin_settings, ["single"]))
        values = [f"record {number}".encode() for number in range(5)]
        assert asyncio.run(round_trip(cluster.bootstrap_servers, "single", values)) == values
        assert "Kafka Server started" in broker.log_path.read_text()
    assert not broker.directory.exists()
    with pytest.raises(TimeoutError):
        wait_for_port("127.0.0.1", broker.port, timeout=0.2)


async def test_the_cluster_serves_three_brokers_over_sasl_ssl(secure_kafka: SecureKafka) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=secure_kafka.bootstrap_servers,
                                **secure_kafka.client_security())
    await admin.start()
    try:
        cluster = await admin.describe_cluster()
    finally:
        await admin.close()
    assert sorted(broker["node_id"] for broker in cluster["brokers"]) == [1, 2, 3]
    assert {broker["port"] for broker in cluster["brokers"]} == {
        broker.port for broker in secure_kafka.cluster.brokers}
    topic = f"trip{uuid.uuid4().hex[:8]}"
    await create_topic(secure_kafka, topic)
    values = [b"alpha", b"beta", b"gamma"]
    assert await round_trip(secure_kafka.bootstrap_servers, topic, values,
                            **secure_kafka.client_security()) == values


async def test_services_create_topics_with_three_replicas_and_two_in_sync(
    secure_kafka: SecureKafka,
) -> None:
    topic = f"replicated{uuid.uuid4().hex[:8]}"
    await create_topic(secure_kafka, topic)
    admin = AIOKafkaAdminClient(bootstrap_servers=secure_kafka.cluster.internal_bootstrap_servers)
    await admin.start()
    try:
        [described] = await eventually(lambda: admin.describe_topics([topic]), timeout=30,
                                       until=lambda found: len(found[0]["partitions"]) == 6)
        [configs] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic, {"min.insync.replicas": None})])
    finally:
        await admin.close()
    assert len(described["partitions"]) == 6
    assert {len(partition["replicas"]) for partition in described["partitions"]} == {3}
    [(_, _, _, _, entries)] = configs.resources
    assert {name: value for name, value, *_ in entries} == {"min.insync.replicas": "2"}


async def test_killing_the_busiest_leader_leaves_writes_to_the_others_until_it_is_back(
    secure_kafka: SecureKafka,
) -> None:
    cluster = secure_kafka.cluster
    topic = f"failover{uuid.uuid4().hex[:8]}"
    # Seven partitions over three brokers: one of them leads more than another.
    await create_topic(secure_kafka, topic, partitions=7)
    before = await eventually(lambda: leaders(secure_kafka, topic), timeout=30,
                              until=lambda led: len(led) == 7 and min(led.values()) > 0)
    led = Counter(before.values())
    assert len(set(led.values())) > 1, led
    busiest = await asyncio.to_thread(cluster.busiest_leader, [topic])
    assert led[busiest] == max(led.values()), (busiest, led)

    cluster.kill(busiest)
    try:
        assert not cluster.broker(busiest).alive()
        values = [b"written while its leader is down"]
        its_partition = min(p for p, leader in before.items() if leader == busiest)
        # acks=all with two of three replicas in sync: the write waits for the new leader.
        assert await round_trip(secure_kafka.bootstrap_servers, topic, values,
                                partition=its_partition,
                                **secure_kafka.client_security()) == values
        after = await eventually(lambda: leaders(secure_kafka, topic), timeout=30,
                                 until=lambda led: busiest not in led.values())
        assert min(after.values()) > 0
    finally:
        await asyncio.to_thread(cluster.restart, busiest)
    assert cluster.broker(busiest).alive()


def test_a_cluster_id_never_reads_as_an_option_to_the_storage_tool() -> None:
    from leadrelay.harness.kafka import _cluster_id

    ids = [_cluster_id() for _ in range(2000)]
    assert all(len(found) == 22 and not found.startswith("-") for found in ids)
