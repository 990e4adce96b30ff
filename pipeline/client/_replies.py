"""The client's reply reader: every partition of a reply topic, from its end, without a group.

A `ConsumerLoop` in assign mode: no group means no rebalance and nothing to commit, so two
clients never take replies from each other (see `PipelineClient`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from aiokafka import TopicPartition

from pipeline.transport.kafka_consumer import Batch, ConsumerLoop, KafkaConsumer
from pipeline.transport.records import SourceRecord


class ReplyReader(ConsumerLoop):
    fetch_timeout_ms = 100

    def __init__(self, consumer: KafkaConsumer, topic: str, partitions: Sequence[int],
                 deliver: Callable[[SourceRecord], None]) -> None:
        super().__init__(consumer, topic)
        self._partition_ids = sorted(partitions)
        self._deliver = deliver

    async def join(self) -> None:
        """Assign every partition and resolve its end now, so replies published from here on are seen."""
        tps = [TopicPartition(self.topic, p) for p in self._partition_ids]
        self._consumer.assign(tps)
        await self._consumer.seek_to_end(*tps)
        for tp in tps:
            await self._consumer.position(tp)

    async def handle(self, batch: Batch) -> None:
        for records in batch.values():
            for record in records:
                self._deliver(record)
