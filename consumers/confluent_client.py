"""``kafka.client: confluent``: confluent-kafka, Python bindings of librdkafka (C).

librdkafka fetches and parses records on its own threads, so polling costs the Python
loop little more than reading each record's value and timestamp. Rebalance callbacks run
inside :meth:`ConfluentConsumer.poll`, on the loop's thread: a checkpoint restore's seeks
become the offsets the partitions are assigned at, and the offsets of a revocation are
committed synchronously before the partitions go.
"""

from __future__ import annotations

import itertools
import json
import logging
import operator
import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
)
from confluent_kafka import TopicPartition as KafkaTopicPartition
from numpy.typing import NDArray

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
from consumers.librdkafka_config import translate

__all__ = ["ConfluentConsumer", "ConfluentProducer"]

log = logging.getLogger("driftline.consumer")
librdkafka_log = logging.getLogger("driftline.librdkafka")

#: how often librdkafka reports its statistics (for :meth:`ConfluentConsumer.contact_age`)
STATS_INTERVAL_MS = 1000
#: how long librdkafka waits to fetch a partition again once its prefetch queue is full.
#: Its default, 1 s, is for consumers faster than the broker; stage 1 is slower than the
#: broker whenever it works through a backlog, drains the queue within that second and
#: then waits for records: 91k-97k events/s with it, 112k-128k with 10 ms, on the bench
#: data (alternating trials). A ``kafka.consumer`` setting of the same name wins.
FETCH_QUEUE_BACKOFF_MS = 10


def _record(m: Message) -> Record:
    return Record(m.topic() or "", m.partition() or 0, m.offset() or 0, m.key(), m.value())


def _timestamps(ms: list[Message]) -> NDArray[np.float64]:
    """Each record's timestamp, epoch milliseconds."""
    stamps = map(operator.itemgetter(1), map(Message.timestamp, ms))
    return np.fromiter(stamps, np.float64, len(ms))


def _ours(tps: Iterable[KafkaTopicPartition]) -> list[TopicPartition]:
    return [TopicPartition(tp.topic, tp.partition) for tp in tps]


def _on_error(err: KafkaError) -> None:
    # transport errors are retried by librdkafka; the loop reports them through readiness
    librdkafka_log.warning("kafka client error: %s", err)


def _common(config: Mapping[str, Any]) -> dict[str, Any]:
    return {**translate(config), "error_cb": _on_error, "logger": librdkafka_log}


class ConfluentConsumer(ConsumerClient):
    def __init__(self, config: Mapping[str, Any]) -> None:
        settings = {
            "statistics.interval.ms": STATS_INTERVAL_MS,
            "fetch.queue.backoff.ms": FETCH_QUEUE_BACKOFF_MS,
            **_common(config),
        }
        settings["stats_cb"] = self._on_stats
        self.session_timeout = int(settings.get("session.timeout.ms", 45_000)) / 1000.0
        self._contact: float | None = None
        #: seeks asked for while partitions are being assigned: offsets to assign them at
        self._assigning: dict[TopicPartition, int] | None = None
        self._rebalance: Rebalance | None = None
        self._callback_error: Exception | None = None
        try:
            self._consumer = Consumer(settings)
        except KafkaException as exc:
            raise KafkaClientError(str(exc)) from exc

    def subscribe(self, topics: list[str], rebalance: Rebalance) -> None:
        self._rebalance = rebalance
        self._consumer.subscribe(
            topics, on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )

    def poll(self, timeout_ms: int, max_records: int) -> list[PartitionBatch]:
        failed, self._callback_error = self._callback_error, None
        if failed is not None:  # in the previous poll, whose records were returned
            raise KafkaClientError(f"rebalance callback failed: {failed!r}") from failed
        try:
            messages = self._consumer.consume(max_records, timeout_ms / 1000.0)
        except KafkaException as exc:
            raise KafkaClientError(str(exc)) from exc
        errors = list(map(Message.error, messages))
        if errors.count(None) != len(errors):  # rare: end of partition, transport errors
            for m, err in zip(messages, errors, strict=True):
                if err is not None:
                    self._message_error(m)
            messages = [m for m, err in zip(messages, errors, strict=True) if err is None]
        if not messages:
            return []
        # Records come in runs of one partition: find the runs with numpy, read each
        # record's fields in C (map over the message type's methods), no loop per record.
        topics = np.array(list(map(Message.topic, messages)), dtype=object)
        partitions = np.fromiter(map(Message.partition, messages), np.int64, len(messages))
        starts = np.flatnonzero((topics[1:] != topics[:-1]) | (partitions[1:] != partitions[:-1]))
        bounds = [0, *(starts + 1).tolist(), len(messages)]
        groups: dict[tuple[str, int], list[Message]] = {}
        for a, b in itertools.pairwise(bounds):
            groups.setdefault((topics[a], int(partitions[a])), []).extend(messages[a:b])
        return [
            PartitionBatch(
                tp=TopicPartition(topic or "", partition),
                values=list(map(Message.value, ms)),
                times=(_timestamps(ms) / 1000.0).tolist(),
                first_offset=ms[0].offset() or 0,
                next_offset=(ms[-1].offset() or 0) + 1,
                native=ms,
                as_record=_record,
            )
            for (topic, partition), ms in groups.items()
        ]

    @staticmethod
    def _message_error(m: Message) -> None:
        err = m.error()
        if err is None or err.code() == KafkaError._PARTITION_EOF:
            return
        if err.fatal() or not err.retriable():
            raise KafkaClientError(str(err))
        log.warning("consume error; librdkafka retries", extra={"error": str(err)})

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if self._assigning is not None:
            self._assigning[tp] = offset
            return
        try:
            self._consumer.seek(KafkaTopicPartition(tp.topic, tp.partition, offset))
        except KafkaException as exc:
            raise KafkaClientError(str(exc)) from exc

    def seek_to_beginning(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            self.seek(tp, OFFSET_BEGINNING)

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        try:
            done = self._consumer.commit(offsets=_native(offsets), asynchronous=False)
        except KafkaException as exc:
            raise KafkaClientError(str(exc)) from exc
        failed = [tp for tp in done or [] if tp.error is not None]
        if failed:
            raise KafkaClientError(f"commit refused: {failed[0].error}")

    def assignment(self) -> set[TopicPartition]:
        return set(_ours(self._consumer.assignment()))

    def highwater(self, tp: TopicPartition) -> int | None:
        try:
            _, high = self._consumer.get_watermark_offsets(
                KafkaTopicPartition(tp.topic, tp.partition), cached=True
            )
        except KafkaException:
            return None
        return None if high < 0 else int(high)

    def contact_age(self) -> float:
        return float("inf") if self._contact is None else time.monotonic() - self._contact

    def close(self) -> None:
        self._consumer.close()

    # -- librdkafka's callbacks, served inside poll --------------------------------------

    def _on_stats(self, stats: str) -> None:
        # rxidle: microseconds since a broker last sent anything (-1: never); fetches and
        # heartbeats answer at least every fetch.wait.max.ms while the cluster is up
        brokers = json.loads(stats).get("brokers", {}).values()
        idle = [b["rxidle"] for b in brokers if b.get("state") == "UP" and b.get("rxidle", -1) >= 0]
        if idle:
            self._contact = time.monotonic() - min(idle) / 1e6

    # A failing callback is logged, the rebalance goes on and poll raises afterwards, as
    # kafka-python does with its listener's exceptions.

    def _on_assign(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        assert self._rebalance is not None
        self._assigning = {}
        try:
            self._rebalance.assigned(_ours(partitions))
        except Exception as exc:
            log.exception("restoring assigned partitions failed")
            self._callback_error = exc
        finally:
            seeks, self._assigning = self._assigning, None
            for p in partitions:
                p.offset = seeks.get(TopicPartition(p.topic, p.partition), p.offset)
            consumer.assign(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        assert self._rebalance is not None
        try:
            offsets = self._rebalance.revoked(_ours(partitions))
        except Exception as exc:
            log.exception("checkpointing revoked partitions failed")
            self._callback_error = exc
            return
        if offsets:
            try:
                consumer.commit(offsets=_native(offsets), asynchronous=False)
            except KafkaException as exc:  # the next owner restores the checkpoint anyway
                log.warning("commit on revocation failed", extra={"error": str(exc)})

    def _on_lost(self, consumer: Consumer, partitions: list[KafkaTopicPartition]) -> None:
        assert self._rebalance is not None
        try:
            self._rebalance.lost(_ours(partitions))
        except Exception as exc:
            log.exception("dropping lost partitions failed")
            self._callback_error = exc


def _native(offsets: Mapping[TopicPartition, int]) -> list[KafkaTopicPartition]:
    return [KafkaTopicPartition(tp.topic, tp.partition, o) for tp, o in offsets.items()]


class _CallbackDelivery:
    __slots__ = ("_done", "error")

    def __init__(self) -> None:
        self._done = False
        self.error: BaseException | None = None

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        self._done = True
        if err is not None:
            self.error = KafkaClientError(str(err))

    def done(self) -> bool:
        return self._done

    def failed(self) -> bool:
        return self.error is not None


class ConfluentProducer(ProducerClient):
    def __init__(self, config: Mapping[str, Any]) -> None:
        try:
            self._producer = Producer(_common(config))
        except KafkaException as exc:
            raise KafkaClientError(str(exc)) from exc

    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Delivery:
        delivery = _CallbackDelivery()
        hdrs: list[tuple[str, str | bytes | None]] | None = None
        if headers is not None:
            hdrs = list(headers)
        try:
            self._producer.produce(topic, value, key, headers=hdrs, on_delivery=delivery)
        except BufferError:  # the local queue is full: serve deliveries, try once more
            self._producer.poll(1.0)
            try:
                self._producer.produce(topic, value, key, headers=hdrs, on_delivery=delivery)
            except BufferError as exc:
                raise KafkaClientError("producer queue full") from exc
        except KafkaException as exc:
            raise KafkaClientError(str(exc)) from exc
        self._producer.poll(0)
        return delivery

    def flush(self, timeout: float) -> None:
        pending = self._producer.flush(timeout)
        if pending:
            raise KafkaClientError(f"{pending} records not delivered after {timeout:g}s")

    def close(self, timeout: float) -> None:
        self._producer.flush(timeout)
