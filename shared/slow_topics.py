"""Topics a consumer reads in short visits instead of in every fetch.

Every fetch names every partition it reads, and both the broker and the client pay for each
one, data or not; a consumer polling a few times a second pays that many times over. A topic
whose events are not on anybody's clock (the scorer reading the router's assignment events to
move a lead's stage) does not need it: `SlowTopics` keeps its partitions paused and resumes
them for a short window every `interval`, long enough for two fetches to include them. Events
wait at most about `interval` longer; nothing is skipped, because a paused partition keeps
its position and records fetched for it while it was paused are fetched again.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from aiokafka import AIOKafkaConsumer


class SlowTopics:
    """Pauses and resumes a consumer's partitions of `topics` on a fixed rhythm."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        topics: Collection[str],
        *,
        interval: float,
        window: float,
        clock: Callable[[], float],
    ) -> None:
        self.consumer = consumer
        self.topics = frozenset(topics)
        self.interval = interval
        """Seconds from one visit to the next."""
        self.window = window
        """Seconds the partitions stay resumed on each visit."""
        self.clock = clock
        self._next_visit = float("-inf")
        self._visit_ends = float("-inf")
        self.visits = 0

    def pace(self) -> float:
        """Pause or resume the partitions as the time says; seconds until the next change."""
        if not self.topics:
            return float("inf")
        now = self.clock()
        partitions = [tp for tp in self.consumer.assignment() if tp.topic in self.topics]
        if now >= self._next_visit:
            self._next_visit = now + self.interval
            self._visit_ends = now + self.window
            self.visits += 1
            self.consumer.resume(*partitions)
        elif now >= self._visit_ends:
            # Every time, not once: partitions assigned since the last call start unpaused.
            self.consumer.pause(*partitions)
        if now < self._visit_ends:
            return self._visit_ends - now
        return self._next_visit - now
