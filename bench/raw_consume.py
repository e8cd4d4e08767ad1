"""The baselines of bench/throughput.py: a plain client consuming a topic, nothing else.

Not a test. ``raw_consume_rate`` (kafka-python) and ``raw_confluent_rate``
(confluent-kafka) read a topic from its beginning in large batches, counting the records
and nothing else, and time it from the first record received to the last, the same span
driftline's side of the benchmark is timed over, so the group join (slow on the embedded
broker) is left out.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from kafka import KafkaConsumer

__all__ = ["raw_confluent_rate", "raw_consume_rate"]

#: Large fetches and batches: the best the raw client can do. ``consumer_config`` wins.
FETCH_CONFIG: Mapping[str, Any] = {
    "max_poll_records": 10_000,
    "fetch_min_bytes": 1,
    "fetch_max_bytes": 64 * 1024 * 1024,
    "max_partition_fetch_bytes": 16 * 1024 * 1024,
    "receive_buffer_bytes": 4 * 1024 * 1024,
}


def raw_consume_rate(
    bootstrap: str,
    topic: str,
    n_expected: int,
    consumer_config: Mapping[str, Any],
    *,
    timeout: float = 600.0,
    idle_timeout: float = 15.0,
) -> tuple[int, float]:
    """Consume ``topic`` from the beginning; return (records, seconds first→last record).

    Stops at ``n_expected`` records, after ``idle_timeout`` seconds without a record once
    the first has arrived, or after ``timeout`` seconds in all. Uses a fresh consumer
    group and commits nothing. Seconds is 0.0 when every record came in one poll.
    """
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=bootstrap.split(","),
        group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **{**FETCH_CONFIG, **consumer_config},
    )
    records = 0
    first = last = 0.0
    deadline = time.perf_counter() + timeout
    try:
        while records < n_expected:
            now = time.perf_counter()
            if now >= deadline or (records and now - last >= idle_timeout):
                break
            got = sum(len(batch) for batch in consumer.poll(timeout_ms=200).values())
            if got:
                last = time.perf_counter()
                if not records:
                    first = last
                records += got
    finally:
        consumer.close()
    return records, last - first


def raw_confluent_rate(
    bootstrap: str,
    topic: str,
    n_expected: int,
    consumer_config: Mapping[str, Any],
    *,
    timeout: float = 600.0,
    idle_timeout: float = 15.0,
) -> tuple[int, float]:
    """``raw_consume_rate`` with confluent-kafka (librdkafka); ``consumer_config`` in
    kafka-python's names, as driftline takes them."""
    from confluent_kafka import Consumer

    from consumers.librdkafka_config import translate

    config = {
        **translate({**FETCH_CONFIG, **consumer_config}),
        "bootstrap.servers": bootstrap,
        "group.id": f"bench-raw-{uuid.uuid4().hex[:8]}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    }
    consumer = Consumer(config)
    consumer.subscribe([topic])
    records = 0
    first = last = 0.0
    deadline = time.perf_counter() + timeout
    try:
        while records < n_expected:
            now = time.perf_counter()
            if now >= deadline or (records and now - last >= idle_timeout):
                break
            messages = consumer.consume(10_000, 0.2)
            got = sum(1 for m in messages if m.error() is None)
            if got:
                last = time.perf_counter()
                if not records:
                    first = last
                records += got
    finally:
        consumer.close()
    return records, last - first
