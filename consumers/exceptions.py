"""One root for every error the Kafka edge raises."""

from __future__ import annotations

__all__ = ["BrokerError", "ConsumersError", "KafkaClientError"]


class ConsumersError(Exception):
    """Root of every error raised by :mod:`consumers`."""


class BrokerError(ConsumersError):
    """The embedded broker cannot be found, started or reached."""


class KafkaClientError(ConsumersError):
    """The Kafka client failed: broker unreachable, request refused or timed out."""
