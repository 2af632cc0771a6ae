"""No busy polling when idle: a consumer's fetch wait lengthens once it has nothing to do.

A broker that answers a waiting fetch only when the wait ends (the embedded broker) makes the
fetch wait a poll period: 10-20 ms keeps a hop fast and costs a busy loop when nothing happens.
`IdleBackoff` lengthens the client's fetch wait to `idle_wait` once the consumer has had nothing
for `idle_after` seconds, and puts it back at the first record. The first event after a quiet
spell waits up to `idle_wait` longer; under any steady flow of events nothing changes. On Apache
Kafka, which answers a waiting fetch as soon as data arrives, the configured wait (500 ms) is
already longer and the back-off does nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

Records = Mapping[TopicPartition, Sequence[ConsumerRecord]]


class IdleBackoff:
    """Lengthens a consumer's fetch wait while it has nothing to do."""

    def __init__(
        self, consumer: AIOKafkaConsumer, *, busy_wait_ms: int, idle_wait_ms: int,
        idle_after: float, clock: Callable[[], float],
    ) -> None:
        self.consumer = consumer
        self.busy_wait_ms = busy_wait_ms
        self.idle_wait_ms = max(idle_wait_ms, busy_wait_ms)
        self.idle_after = idle_after
        self.clock = clock
        self._last_records = clock()
        self.idle = False

    @property
    def wait_ms(self) -> int:
        """The fetch wait in force."""
        return self.idle_wait_ms if self.idle else self.busy_wait_ms

    def saw(self, records: Records) -> None:
        """Note what a fetch returned; set the fetch wait accordingly."""
        now = self.clock()
        if records:
            self._last_records = now
            if self.idle:
                self._set_wait(self.busy_wait_ms)
                self.idle = False
        elif not self.idle and now - self._last_records >= self.idle_after:
            self._set_wait(self.idle_wait_ms)
            self.idle = True

    def _set_wait(self, wait_ms: int) -> None:
        # aiokafka reads this attribute each time it builds a fetch request, and has no
        # public way to change it on a running consumer.
        fetcher = getattr(self.consumer, "_fetcher", None)
        if fetcher is not None:
            fetcher._fetch_max_wait_ms = wait_ms
