"""The compacted-topic checkpoint store on a real broker."""

from __future__ import annotations

import os

import pytest

from alerts.outbox import Notification, Outbox
from alerts.payloads import json_request
from consumers.checkpoints import KafkaTopicStore
from consumers.loop import security_config
from monitor.config import KafkaSettings

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


def test_the_alert_outbox_lives_in_the_topic_store_too(kafka_bootstrap, make_topic):
    topic = make_topic()
    store = KafkaTopicStore(kafka_bootstrap, topic)
    a, b = note(1.0, "msg_a"), note(2.0, "msg_b")
    try:
        box = Outbox(store)
        assert box.load() == []
        box.put(a)
        box.put(b)
        box.remove(a.id)  # delivered: a tombstone
    finally:
        store.close()
    again = KafkaTopicStore(kafka_bootstrap, topic)  # another instance, after a restart
    try:
        assert Outbox(again).load() == [b]
        assert again.keys("alerts/outbox/") == ["alerts/outbox/msg_b"]
    finally:
        again.close()


def test_every_client_gets_the_security_settings_of_the_consumer():
    kafka = KafkaSettings(
        consumer={
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": "driftline",
            "ssl_cafile": "/etc/ca.pem",
            "max_poll_interval_ms": 1000,  # how to consume, not how to connect
        }
    )
    assert security_config(kafka, {"sasl_plain_password": "s3cret"}) == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "driftline",
        "ssl_cafile": "/etc/ca.pem",
        "sasl_plain_password": "s3cret",
    }


def note(created_at: float, nid: str) -> Notification:
    return Notification(nid, "ops", json_request("http://127.0.0.1:9/", {}), created_at)
