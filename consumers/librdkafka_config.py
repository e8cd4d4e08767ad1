"""kafka-python's client settings in librdkafka's names, for ``kafka.client: confluent``.

``kafka.consumer`` and ``kafka.producer`` are written in kafka-python's names whichever
client runs them, so that switching the client is one line of configuration: each name
below is translated, with its value, to librdkafka's. A name with a dot is librdkafka's
own and is passed as is (a setting kafka-python has no word for). A kafka-python name
with no librdkafka counterpart is refused, naming the key.

>>> translate({"session_timeout_ms": 3000, "ssl_check_hostname": False, "acks": "all"})
{'session.timeout.ms': 3000, 'ssl.endpoint.identification.algorithm': 'none', 'acks': 'all'}
>>> translate({"bootstrap_servers": ["a:9092", "b:9092"], "fetch.wait.max.ms": 50})
{'bootstrap.servers': 'a:9092,b:9092', 'fetch.wait.max.ms': 50}
>>> translate({"ssl_context": object()})
Traceback (most recent call last):
consumers.librdkafka_config.UnsupportedSettingError: ssl_context: no librdkafka equivalent; \
use librdkafka's own settings (ssl.*)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from consumers.exceptions import ConsumersError

__all__ = ["IGNORED", "UnsupportedSettingError", "translate"]


class UnsupportedSettingError(ConsumersError):
    """A client setting the configured Kafka client cannot take; ``key`` names it."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


def _same(v: Any) -> Any:
    return v


def _servers(v: Any) -> str:
    return v if isinstance(v, str) else ",".join(v)


def _kbytes(v: Any) -> int:
    return max(1, int(v) // 1024)


_NAMES: Mapping[str, tuple[str, Callable[[Any], Any]]] = {
    # reaching the cluster
    "bootstrap_servers": ("bootstrap.servers", _servers),
    "client_id": ("client.id", _same),
    "client_rack": ("client.rack", _same),
    "request_timeout_ms": ("socket.timeout.ms", _same),
    "connections_max_idle_ms": ("connections.max.idle.ms", _same),
    "reconnect_backoff_ms": ("reconnect.backoff.ms", _same),
    "reconnect_backoff_max_ms": ("reconnect.backoff.max.ms", _same),
    "retry_backoff_ms": ("retry.backoff.ms", _same),
    "metadata_max_age_ms": ("metadata.max.age.ms", _same),
    "receive_buffer_bytes": ("socket.receive.buffer.bytes", _same),
    "send_buffer_bytes": ("socket.send.buffer.bytes", _same),
    "receive_message_max_bytes": ("receive.message.max.bytes", _same),
    "max_in_flight_requests_per_connection": ("max.in.flight.requests.per.connection", _same),
    "allow_auto_create_topics": ("allow.auto.create.topics", _same),
    # security: protocol, SASL, TLS
    "security_protocol": ("security.protocol", _same),
    "sasl_mechanism": ("sasl.mechanism", _same),
    "sasl_plain_username": ("sasl.username", _same),
    "sasl_plain_password": ("sasl.password", _same),
    "sasl_kerberos_service_name": ("sasl.kerberos.service.name", _same),
    "ssl_cafile": ("ssl.ca.location", _same),
    "ssl_certfile": ("ssl.certificate.location", _same),
    "ssl_keyfile": ("ssl.key.location", _same),
    "ssl_password": ("ssl.key.password", _same),
    "ssl_crlfile": ("ssl.crl.location", _same),
    "ssl_ciphers": ("ssl.cipher.suites", _same),
    "ssl_check_hostname": (
        "ssl.endpoint.identification.algorithm",
        lambda v: "https" if v else "none",
    ),
    # consuming
    "group_id": ("group.id", _same),
    "group_instance_id": ("group.instance.id", _same),
    "enable_auto_commit": ("enable.auto.commit", _same),
    "auto_commit_interval_ms": ("auto.commit.interval.ms", _same),
    "auto_offset_reset": ("auto.offset.reset", _same),
    "session_timeout_ms": ("session.timeout.ms", _same),
    "heartbeat_interval_ms": ("heartbeat.interval.ms", _same),
    "max_poll_interval_ms": ("max.poll.interval.ms", _same),
    "fetch_min_bytes": ("fetch.min.bytes", _same),
    "fetch_max_bytes": ("fetch.max.bytes", _same),
    "fetch_max_wait_ms": ("fetch.wait.max.ms", _same),
    "max_partition_fetch_bytes": ("max.partition.fetch.bytes", _same),
    "isolation_level": ("isolation.level", _same),
    "check_crcs": ("check.crcs", _same),
    # producing
    "acks": ("acks", str),
    "linger_ms": ("linger.ms", _same),
    "batch_size": ("batch.size", _same),
    "compression_type": ("compression.type", lambda v: "none" if v is None else v),
    "max_request_size": ("message.max.bytes", _same),
    "retries": ("retries", _same),
    "enable_idempotence": ("enable.idempotence", _same),
    "delivery_timeout_ms": ("delivery.timeout.ms", _same),
    "buffer_memory": ("queue.buffering.max.kbytes", _kbytes),
    "transactional_id": ("transactional.id", _same),
    "transaction_timeout_ms": ("transaction.timeout.ms", _same),
}

#: kafka-python settings that mean nothing to librdkafka's clients: the batch size is a
#: ``consume`` argument, and waiting for metadata and the bootstrap are built in
IGNORED = frozenset({"max_poll_records", "max_block_ms", "bootstrap_timeout_ms"})


def translate(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` (kafka-python's names, or librdkafka's with dots) in librdkafka's names.

    Raises :class:`UnsupportedSettingError` for a kafka-python name librdkafka has no word for.
    """
    out: dict[str, Any] = {}
    for key, value in config.items():
        if "." in key:
            out[key] = value
        elif key in _NAMES:
            name, convert = _NAMES[key]
            out[name] = convert(value)
        elif key not in IGNORED:
            family = key.split("_", 1)[0]
            hint = f" ({family}.*)" if family in ("ssl", "sasl") else ""
            raise UnsupportedSettingError(
                key, f"no librdkafka equivalent; use librdkafka's own settings{hint}"
            )
    return out
