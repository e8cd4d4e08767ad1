"""``kafka.client: kafka-python``: the pure-Python client, the default."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KafkaTopicPartition
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from consumers.kafka_client import (
    ConsumerClient,
    Delivery,
    KafkaClientError,
    PartitionBatch,
    ProducerClient,
    Rebalance,
    Record,
    TopicPartition,
)

__all__ = ["KafkaPythonConsumer", "KafkaPythonProducer"]

log = logging.getLogger("driftline.consumer")


def _record(r: Any) -> Record:
    return Record(r.topic, r.partition, r.offset, r.key, r.value)


def _batch(tp: Any, records: list[Any]) -> PartitionBatch:
    return PartitionBatch(
        tp=TopicPartition(tp.topic, tp.partition),
        values=[r.value for r in records],
        times=[r.timestamp / 1000.0 for r in records],
        first_offset=records[0].offset,
        next_offset=records[-1].offset + 1,
        native=records,
        as_record=_record,
    )


def _ours(tps: Iterable[Any]) -> list[TopicPartition]:
    return [TopicPartition(tp.topic, tp.partition) for tp in tps]


class KafkaPythonConsumer(ConsumerClient):
    def __init__(self, config: Mapping[str, Any]) -> None:
        try:
            self._consumer = KafkaConsumer(**config)
        except KafkaError as exc:
            raise KafkaClientError(repr(exc)) from exc
        self.session_timeout = self._consumer.config["session_timeout_ms"] / 1000.0

    def subscribe(self, topics: list[str], rebalance: Rebalance) -> None:
        self._consumer.subscribe(topics, listener=_Listener(self._consumer, rebalance))

    def poll(self, timeout_ms: int, max_records: int) -> list[PartitionBatch]:
        try:
            polled = self._consumer.poll(timeout_ms=timeout_ms, max_records=max_records)
        except KafkaError as exc:
            raise KafkaClientError(repr(exc)) from exc
        return [_batch(tp, records) for tp, records in polled.items() if records]

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self._consumer.seek(KafkaTopicPartition(*tp), offset)

    def seek_to_beginning(self, tps: Iterable[TopicPartition]) -> None:
        self._consumer.seek_to_beginning(*(KafkaTopicPartition(*tp) for tp in tps))

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        try:
            self._consumer.commit(_commit_offsets(offsets))
        except KafkaError as exc:
            raise KafkaClientError(repr(exc)) from exc

    def assignment(self) -> set[TopicPartition]:
        return set(_ours(self._consumer.assignment()))

    def highwater(self, tp: TopicPartition) -> int | None:
        high: int | None = self._consumer.highwater(KafkaTopicPartition(*tp))
        return high

    def contact_age(self) -> float:
        metrics = self._consumer.metrics().get("consumer-coordinator-metrics", {})
        return float(metrics.get("last-heartbeat-seconds-ago", float("inf")))

    def close(self) -> None:
        self._consumer.close(autocommit=False)


def _commit_offsets(offsets: Mapping[TopicPartition, int]) -> dict[Any, Any]:
    return {KafkaTopicPartition(*tp): OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()}


class _Listener(AsyncConsumerRebalanceListener):  # type: ignore[misc]
    """Runs on kafka-python's IO loop: no blocking consumer calls in here."""

    def __init__(self, consumer: Any, rebalance: Rebalance) -> None:
        self.consumer = consumer
        self.rebalance = rebalance

    async def on_partitions_revoked(self, revoked: Any) -> None:
        offsets = self.rebalance.revoked(_ours(revoked))
        if offsets:
            try:
                # the async form of commit(); the blocking one cannot run on the IO loop
                coordinator = self.consumer._coordinator
                await coordinator._commit_offsets_sync_async(_commit_offsets(offsets))
            except Exception as exc:  # the next owner restores the checkpoint anyway
                log.warning("commit on revocation failed", extra={"error": str(exc)})

    async def on_partitions_lost(self, lost: Any) -> None:
        self.rebalance.lost(_ours(lost))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self.rebalance.assigned(_ours(assigned))


class _FutureDelivery:
    __slots__ = ("_future",)

    def __init__(self, future: Any) -> None:
        self._future = future

    def done(self) -> bool:
        return bool(self._future.is_done)

    def failed(self) -> bool:
        return bool(self._future.failed())

    @property
    def error(self) -> BaseException | None:
        exc: BaseException | None = self._future.exception
        return exc


class KafkaPythonProducer(ProducerClient):
    def __init__(self, config: Mapping[str, Any]) -> None:
        try:
            self._producer = KafkaProducer(**config)
        except KafkaError as exc:
            raise KafkaClientError(repr(exc)) from exc

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Delivery:
        try:
            future = self._producer.send(topic, key=key, value=value, headers=headers)
        except KafkaError as exc:
            raise KafkaClientError(repr(exc)) from exc
        return _FutureDelivery(future)

    def flush(self, timeout: float) -> None:
        try:
            self._producer.flush(timeout=timeout)
        except KafkaError as exc:  # KafkaTimeoutError: some still pending
            raise KafkaClientError(repr(exc)) from exc

    def close(self, timeout: float) -> None:
        self._producer.close(timeout=timeout)
