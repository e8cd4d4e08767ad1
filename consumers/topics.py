"""Creating driftline's topics when they do not exist yet."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping
from typing import Any

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from consumers.exceptions import ConsumersError

__all__ = ["ensure_topics", "topic_partitions"]


def ensure_topics(
    bootstrap_servers: str,
    names: Iterable[str],
    partitions: int = 1,
    timeout: float = 30.0,
    config: dict[str, str] | None = None,
    client: Mapping[str, Any] | None = None,
) -> list[str]:
    """Create each topic that is missing (one replica); existing topics are left alone.
    Returns the names created. ``client``: security settings for the admin client."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin = KafkaAdminClient(
                bootstrap_servers=bootstrap_servers.split(","), **(client or {})
            )
            break
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise ConsumersError(f"cannot reach Kafka at {bootstrap_servers}: {exc}") from exc
            time.sleep(0.5)
    try:
        existing = set(admin.list_topics())
        wanted = [n for n in dict.fromkeys(names) if n not in existing]
        for name in wanted:
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(name, partitions, 1, topic_configs=config or {})])
        return wanted
    finally:
        admin.close()


def topic_partitions(
    bootstrap_servers: str, names: Iterable[str], client: Mapping[str, Any] | None = None
) -> dict[str, int]:
    """Partition counts of the topics among ``names`` that exist (raises ``KafkaError``)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers.split(","), **(client or {}))
    try:
        wanted = [n for n in dict.fromkeys(names) if n in set(admin.list_topics())]
        if not wanted:
            return {}
        described = admin.describe_topics(wanted)
        # the key is "name" in newer DescribeTopics versions, "topic" in older ones
        return {
            d.get("name") or d["topic"]: len(d["partitions"])
            for d in described
            if not d.get("error_code")
        }
    finally:
        admin.close()
