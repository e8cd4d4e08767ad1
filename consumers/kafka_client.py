"""The Kafka client the consumer loops run on: kafka-python (default) or confluent-kafka.

``kafka.client`` picks one; both sit behind :class:`ConsumerClient` and
:class:`ProducerClient`, so the loops hold the exactly-once protocol once: a rebalance
calls :class:`Rebalance` (``assigned`` restores and seeks, ``revoked`` checkpoints and
returns the offsets the client commits before giving the partitions up, ``lost`` drops
them), and offsets are committed only when the loop says so. Records come back as one
:class:`PartitionBatch` per partition, values and timestamps already in lists, so the
decoder never touches a client's record objects. Every client error is a
:class:`KafkaClientError`.

Client settings are written in kafka-python's names whatever the client; see
:mod:`consumers.librdkafka_config` for how they reach librdkafka.
"""

from __future__ import annotations

import importlib.util
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from consumers.exceptions import KafkaClientError

__all__ = [
    "ConsumerClient",
    "Delivery",
    "KafkaClientError",
    "PartitionBatch",
    "ProducerClient",
    "Rebalance",
    "Record",
    "TopicPartition",
    "check_client",
    "new_consumer",
    "new_producer",
]


class TopicPartition(NamedTuple):
    topic: str
    partition: int


class Record(NamedTuple):
    """One record, as the dead-letter topic copies it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass(slots=True)
class PartitionBatch:
    """The records of one partition from one poll, in offset order."""

    tp: TopicPartition
    values: list[bytes | None]
    #: record timestamps, epoch seconds
    times: list[float]
    first_offset: int
    #: the offset after the last record
    next_offset: int
    #: the client's own records, read only for dead letters
    native: Sequence[Any]
    as_record: Callable[[Any], Record]

    def __len__(self) -> int:
        return len(self.values)

    def record(self, index: int) -> Record:
        return self.as_record(self.native[index])


class Rebalance(Protocol):
    """What a consumer loop does when the group changes its partitions."""

    def assigned(self, tps: list[TopicPartition]) -> None: ...

    def revoked(self, tps: list[TopicPartition]) -> Mapping[TopicPartition, int]:
        """Checkpoint and forget ``tps``; the offsets to commit before they go."""
        ...

    def lost(self, tps: list[TopicPartition]) -> None: ...


class Delivery(Protocol):
    """A sent record: not yet known, delivered, or failed with ``error``."""

    def done(self) -> bool: ...

    def failed(self) -> bool: ...

    @property
    def error(self) -> BaseException | None: ...


class ConsumerClient(ABC):
    """A group member consuming with manual commits."""

    #: the group session timeout, seconds
    session_timeout: float

    @abstractmethod
    def subscribe(self, topics: list[str], rebalance: Rebalance) -> None: ...

    @abstractmethod
    def poll(self, timeout_ms: int, max_records: int) -> list[PartitionBatch]:
        """Records of the partitions held, at most ``max_records``; [] after ``timeout_ms``.
        Rebalance callbacks run inside this call."""

    @abstractmethod
    def seek(self, tp: TopicPartition, offset: int) -> None: ...

    @abstractmethod
    def seek_to_beginning(self, tps: Iterable[TopicPartition]) -> None: ...

    @abstractmethod
    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit ``offsets`` (the next offset to consume) synchronously."""

    @abstractmethod
    def assignment(self) -> set[TopicPartition]: ...

    @abstractmethod
    def highwater(self, tp: TopicPartition) -> int | None:
        """The partition's end offset as last seen by a fetch; None before any."""

    @abstractmethod
    def contact_age(self) -> float:
        """Seconds since the cluster (the group coordinator or a fetch) last answered;
        infinity when unknown."""

    @abstractmethod
    def close(self) -> None:
        """Leave the group (revoking the partitions held) without committing."""


class ProducerClient(ABC):
    @abstractmethod
    def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Delivery:
        """Queue a record; raises :class:`KafkaClientError` when refused at once."""

    @abstractmethod
    def flush(self, timeout: float) -> None:
        """Wait until every record sent is delivered or failed; raises
        :class:`KafkaClientError` when some are still pending after ``timeout`` seconds."""

    @abstractmethod
    def close(self, timeout: float) -> None: ...


CLIENTS = ("kafka-python", "confluent")


def check_client(client: str, consumer: Mapping[str, Any], producer: Mapping[str, Any]) -> None:
    """Raise :class:`~consumers.librdkafka_config.UnsupportedSettingError` (``key`` names
    ``client``, ``consumer.<name>`` or ``producer.<name>``) for settings the client
    cannot run with."""
    from consumers.librdkafka_config import UnsupportedSettingError, translate

    if client == "confluent":
        if importlib.util.find_spec("confluent_kafka") is None:
            raise UnsupportedSettingError(
                "client",
                "confluent-kafka is not installed: pip install 'driftline[confluent]'",
            )
        for section, config in (("consumer", consumer), ("producer", producer)):
            try:
                translate(config)
            except UnsupportedSettingError as exc:
                raise UnsupportedSettingError(f"{section}.{exc.key}", exc.reason) from None
        return
    for section, config in (("consumer", consumer), ("producer", producer)):
        for key in config:
            if "." in key:
                raise UnsupportedSettingError(
                    f"{section}.{key}",
                    "a librdkafka setting; kafka-python's names have underscores "
                    "(or set kafka.client: confluent)",
                )


def new_consumer(client: str, config: Mapping[str, Any]) -> ConsumerClient:
    """A consumer of ``client`` with ``config`` (kafka-python's names)."""
    if client == "confluent":
        from consumers.confluent_client import ConfluentConsumer

        return ConfluentConsumer(config)
    from consumers.kafka_python_client import KafkaPythonConsumer

    return KafkaPythonConsumer(config)


def new_producer(client: str, config: Mapping[str, Any]) -> ProducerClient:
    """A producer of ``client`` with ``config`` (kafka-python's names)."""
    if client == "confluent":
        from consumers.confluent_client import ConfluentProducer

        return ConfluentProducer(config)
    from consumers.kafka_python_client import KafkaPythonProducer

    return KafkaPythonProducer(config)
