"""The compacted-topic checkpoint store on a real broker."""

from __future__ import annotations

import os

import pytest

from consumers.checkpoints import KafkaTopicStore

pytestmark = pytest.mark.integration


def test_chunked_checkpoints_round_trip_and_the_newest_wins(kafka_bootstrap, make_topic):
    topic = make_topic()
    store = KafkaTopicStore(kafka_bootstrap, topic, chunk_bytes=64 * 1024)
    try:
        assert store.load("g/t/0") is None
        big = os.urandom(300 * 1024)  # five chunks
        store.save("g/t/0", big)
        store.save("g/t/1", b"other partition")
        assert store.load("g/t/0") == big
        smaller = os.urandom(70 * 1024)  # two chunks: stale chunks 2..4 must not leak in
        store.save("g/t/0", smaller)
        assert store.load("g/t/0") == smaller
        assert store.load("g/t/1") == b"other partition"
    finally:
        store.close()
    # a new process (a new store) reads the same
    again = KafkaTopicStore(kafka_bootstrap, topic, chunk_bytes=64 * 1024)
    try:
        assert again.load("g/t/0") == smaller
    finally:
        again.close()
