"""The consumer loop: poll a batch, dead-letter what is unusable, count the rest, commit.

Failure policy, per kind of failure:

* a record that cannot be used (bad JSON, wrong field type, unknown model, oversize...)
  is produced unchanged to the dead-letter topic with its reason in headers, counted in
  ``driftline_events_invalid_total``, and its offset committed like any other;
* the dead-letter topic cannot be written: nothing of the batch is counted or committed;
  the consumer seeks back to the batch start and retries with backoff;
* broker unavailable / leader change: kafka-python retries inside ``poll``; the loop keeps
  serving HTTP and reports ``driftline_kafka_connected 0``;
* misconfiguration (unknown topic config, bad credentials) surfaces at start and stops the
  service with exit code 2 through the CLI.

Offsets are committed only after the batch has been counted (and dead-lettered).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from consumers.decoding import DecodedBatch, Invalid
from consumers.service import Service
from monitor.config import KafkaSettings

__all__ = ["ConsumerLoop", "dead_letter_headers"]

log = logging.getLogger("driftline.consumer")

#: Kafka Connect's header names for dead-letter context.
HEADER_PREFIX = "__connect.errors."


def dead_letter_headers(
    record: Any, reason: str, message: str, model: str
) -> list[tuple[str, bytes]]:
    return [
        (HEADER_PREFIX + "topic", record.topic.encode()),
        (HEADER_PREFIX + "partition", str(record.partition).encode()),
        (HEADER_PREFIX + "offset", str(record.offset).encode()),
        (HEADER_PREFIX + "exception.class.name", reason.encode()),
        (HEADER_PREFIX + "exception.message", message.encode("utf-8", "replace")[:1000]),
        ("driftline.reason", reason.encode()),
        ("driftline.model", model.encode("utf-8", "replace")[:200]),
    ]


class ConsumerLoop:
    """Consumes the predictions topic into a :class:`Service` until stopped."""

    def __init__(
        self,
        service: Service,
        kafka: KafkaSettings,
        *,
        secrets: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.kafka = kafka
        self.clock = clock
        self._secrets = dict(secrets or {})
        self.stopped = threading.Event()
        self.batches = 0

    def _client_config(self) -> dict[str, Any]:
        common: dict[str, Any] = {"bootstrap_servers": self.kafka.bootstrap_servers.split(",")}
        password = self._secrets.get("sasl_plain_password")
        if password is not None:
            common["sasl_plain_password"] = password
        return common

    def _consumer(self) -> Any:
        config: dict[str, Any] = {
            **self._client_config(),
            "group_id": self.kafka.group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "max_poll_records": self.kafka.max_batch,
            "fetch_max_bytes": 64 * 1024 * 1024,
            "max_partition_fetch_bytes": 16 * 1024 * 1024,
            "client_id": "driftline",
        }
        config.update(self.kafka.consumer)
        return KafkaConsumer(**config)

    def _producer(self) -> Any:
        config: dict[str, Any] = {
            **self._client_config(),
            "acks": "all",
            "linger_ms": 5,
            "client_id": "driftline-dlq",
        }
        config.update(self.kafka.producer)
        return KafkaProducer(**config)

    def run(self, stop: threading.Event) -> None:
        consumer = self._consumer()
        producer = self._producer()
        consumer.subscribe([self.kafka.predictions_topic])
        backoff = 0.5
        try:
            while not stop.is_set():
                polled = consumer.poll(
                    timeout_ms=self.kafka.poll_timeout_ms, max_records=self.kafka.max_batch
                )
                self.service.assigned = bool(consumer.assignment())
                self.service.kafka_connected = bool(consumer.bootstrap_connected())
                if not polled:
                    continue
                try:
                    decoded = self._dead_letter_all(producer, polled)
                except KafkaError as exc:
                    log.error(
                        "dead-letter topic not writable; retrying the batch",
                        extra={
                            "topic": self.kafka.dead_letter_topic,
                            "error": str(exc),
                            "backoff_s": backoff,
                        },
                    )
                    for tp, recs in polled.items():
                        consumer.seek(tp, recs[0].offset)
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                backoff = 0.5
                now = self.clock()
                for tp, batch in decoded:
                    self.service.handle(batch, now, tp.partition)
                consumer.commit()
                self.batches += 1
        finally:
            self.service.assigned = False
            try:
                producer.close(timeout=5)
            finally:
                consumer.close(autocommit=False)
            self.stopped.set()

    def _dead_letter_all(
        self, producer: Any, polled: Mapping[TopicPartition, list[Any]]
    ) -> list[tuple[TopicPartition, DecodedBatch]]:
        """Decode each partition's records; dead-letter the unusable ones, durably."""
        decoded, futures = [], []
        for tp in sorted(polled, key=_tp_key):
            records = polled[tp]
            batch = self.service.decoder.decode(
                [r.value for r in records],
                [r.timestamp / 1000.0 for r in records],
                now=self.clock(),
            )
            decoded.append((tp, batch))
            for inv in batch.invalid:
                futures.append(self._send_dead_letter(producer, records[inv.index], inv))
        if futures:
            producer.flush(timeout=30)
            for f in futures:
                f.get(timeout=30)  # raises the KafkaError of a failed send
        return decoded

    def _send_dead_letter(self, producer: Any, record: Any, inv: Invalid) -> Any:
        log.warning(
            "dead-lettered record",
            extra={
                "model": inv.model,
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "reason": inv.reason,
                "detail": inv.message,
            },
        )
        return producer.send(
            self.kafka.dead_letter_topic,
            key=record.key,
            value=record.value,
            headers=dead_letter_headers(record, inv.reason, inv.message, inv.model),
        )


def _tp_key(tp: TopicPartition) -> tuple[str, int]:
    return (tp.topic, tp.partition)
