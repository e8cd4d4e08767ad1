"""Shared fixtures: one real Kafka broker per session, a topic and a group per test.

The broker is found in this order (see README, tests):

1. ``DRIFTLINE_TEST_BOOTSTRAP_SERVERS``: an external broker, used as is;
2. a testcontainers Kafka, when the ``testcontainers`` package is installed and a Docker
   engine answers;
3. the embedded broker (Tansu, memory-only), started once for the session.

Fixtures:

- ``kafka_bootstrap`` (session): ``"host:port"`` of that broker.
- ``make_topic(partitions=1)``: creates a topic with a unique name and returns the name;
  the topics are deleted after the test.
- ``make_group()``: a unique consumer group id.
- ``kafka_client``: ``kafka.client`` for the test's service, ``"kafka-python"`` then
  ``"confluent"``: a test that asks for it runs once on each client (the confluent run
  is skipped when confluent-kafka is not installed).
- ``consumer_config(**overrides)``: kafka-python consumer settings with short group
  timeouts. The embedded broker holds a group's first JoinGroup for the whole
  ``max_poll_interval_ms``, so every consumer in the tests should start from these.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kafka.admin import KafkaAdminClient, NewTopic

from consumers.broker import EmbeddedBroker

log = logging.getLogger("driftline.tests")

BOOTSTRAP_ENV = "DRIFTLINE_TEST_BOOTSTRAP_SERVERS"


def low_timeout_consumer_config(**overrides: Any) -> dict[str, Any]:
    """Consumer kwargs that keep group joins short on the embedded broker."""
    return {
        "max_poll_interval_ms": 3000,
        "session_timeout_ms": 3000,
        "heartbeat_interval_ms": 500,
        **overrides,
    }


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-not-found]

        docker.from_env(timeout=3).ping()
    except Exception:  # no client library, no socket, no daemon: all mean "no Docker"
        return False
    return True


def _testcontainers_kafka() -> Any | None:
    """A started testcontainers ``KafkaContainer``, or ``None`` when that is not possible."""
    try:
        from testcontainers.kafka import KafkaContainer  # type: ignore[import-not-found]
    except ImportError:
        return None
    if not _docker_answers():
        return None
    container = KafkaContainer()
    container.start()
    return container


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of the session's broker (see the module docstring for the order)."""
    external = os.environ.get(BOOTSTRAP_ENV, "").strip()
    if external:
        log.info("tests use the external broker %s", external)
        yield external
        return
    container = _testcontainers_kafka()
    if container is not None:
        try:
            yield str(container.get_bootstrap_server())
        finally:
            container.stop()
        return
    with EmbeddedBroker() as broker:
        log.info("tests use the embedded broker on %s", broker.bootstrap_servers)
        yield broker.bootstrap_servers


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> Iterator[KafkaAdminClient]:
    """One admin client for the session."""
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap.split(","))
    try:
        yield admin
    finally:
        admin.close()


def _slug(request: pytest.FixtureRequest) -> str:
    # Topic names allow [a-zA-Z0-9._-]; the test name makes a leftover topic traceable.
    return re.sub(r"[^a-zA-Z0-9._-]+", "-", request.node.name)[:60].strip("-")


@pytest.fixture
def make_topic(
    kafka_admin: KafkaAdminClient, request: pytest.FixtureRequest
) -> Iterator[Callable[..., str]]:
    """``make_topic(partitions=1) -> name``: a new topic of this test, deleted afterwards."""
    created: list[str] = []

    def make(partitions: int = 1) -> str:
        name = f"t-{_slug(request)}-{uuid.uuid4().hex[:8]}"
        kafka_admin.create_topics([NewTopic(name, partitions, 1)])
        created.append(name)
        return name

    yield make
    if created:
        with contextlib.suppress(Exception):  # cleanup only; a failure here hides nothing
            kafka_admin.delete_topics(created)


@pytest.fixture
def make_group(request: pytest.FixtureRequest) -> Callable[[], str]:
    """``make_group() -> group_id``: a consumer group no other test uses."""

    def make() -> str:
        return f"g-{_slug(request)}-{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
def consumer_config() -> Callable[..., dict[str, Any]]:
    """``consumer_config(**overrides) -> kwargs``: short group timeouts for test consumers."""
    return low_timeout_consumer_config


@pytest.fixture(params=["kafka-python", "confluent"])
def kafka_client(request: pytest.FixtureRequest) -> str:
    """``kafka.client`` of the test's service; the test runs on each client."""
    if request.param == "confluent":
        pytest.importorskip("confluent_kafka")
    return str(request.param)
