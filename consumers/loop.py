"""The consumer loop: poll, dead-letter what is unusable, count the rest, checkpoint, commit.

Exactly-once state: a partition's counts are checkpointed together with the offset they
reflect, and offsets are committed to Kafka only after that checkpoint is durable. On
assignment a partition's newest checkpoint is restored and the consumer seeks to its
offset; on revocation the partition is checkpointed and committed before it is given up.
Whatever happens to the process, every event is counted exactly once in the state.

Failure policy, per kind of failure:

* a record that cannot be used (bad JSON, wrong field type, unknown model, oversize...)
  is produced unchanged to the dead-letter topic with its reason in headers, counted in
  ``driftline_events_invalid_total``, and its offset committed like any other;
* the dead-letter topic cannot be written: nothing of the batch is counted or committed;
  the consumer seeks back to the batch start and retries with backoff;
* broker unavailable or stalled, leader change: the Kafka client retries inside ``poll``;
  the loop keeps serving HTTP, reports ``driftline_kafka_connected 0`` and fails
  ``/readyz``;
* a checkpoint cannot be written: offsets are not committed (a restart reprocesses from
  the last durable checkpoint) and the error is logged; the next interval retries;
* misconfiguration (bad config, unreadable reference) stops the service at start with
  exit code 2 through the CLI.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from kafka.errors import KafkaError

from consumers.checkpoints import (
    CheckpointError,
    CheckpointStore,
    DirectoryStore,
    KafkaTopicStore,
    RestoreError,
    decode_checkpoint,
    encode_checkpoint,
)
from consumers.dead_letter_log import DeadLetterLog
from consumers.decoding import DecodedBatch, GroundTruthBatch, Invalid
from consumers.exceptions import ConsumersError
from consumers.kafka_client import (
    ConsumerClient,
    Delivery,
    KafkaClientError,
    PartitionBatch,
    ProducerClient,
    Record,
    TopicPartition,
    check_client,
    new_consumer,
    new_producer,
)
from consumers.pane_records import encode_update
from consumers.panes_loop import PanesLoop
from consumers.service import CheckpointInfo, Service
from consumers.topics import ensure_topics, topic_partitions
from monitor.config import KafkaSettings, StateSettings
from monitor.pane_merge import PaneUpdate

__all__ = [
    "HEADER_PREFIX",
    "ConsumerLoop",
    "dead_letter_headers",
    "heartbeat_interval",
    "open_store",
    "security_config",
]

log = logging.getLogger("driftline.consumer")

#: how long a checkpoint waits for the panes topic to ack what it covers (seconds)
PUBLISH_TIMEOUT = 5.0

#: how often assignment, broker health and lag are read from the client (seconds)
OBSERVE_INTERVAL = 0.25

#: Kafka Connect's header names for dead-letter context.
HEADER_PREFIX = "__connect.errors."


def dead_letter_headers(
    record: Record, reason: str, message: str, model: str
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


#: client settings that say how to reach the cluster, not how to consume or produce
_SECURITY_PREFIXES = ("security_protocol", "sasl_", "ssl_")


def security_config(
    kafka: KafkaSettings, secrets: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The security settings of ``kafka.consumer`` (protocol, SASL, TLS) and the SASL
    password, for every other client driftline opens: admin, checkpoint topic, outbox."""
    out = {k: v for k, v in kafka.consumer.items() if k.startswith(_SECURITY_PREFIXES)}
    password = (secrets or {}).get("sasl_plain_password")
    if password is not None:
        out["sasl_plain_password"] = password
    return out


def open_store(
    state: StateSettings, kafka: KafkaSettings, secrets: Mapping[str, str] | None = None
) -> CheckpointStore:
    """The configured state store: checkpoints, alert state and the alert outbox."""
    if state.kafka_topic is not None:
        return KafkaTopicStore(
            kafka.bootstrap_servers,
            state.kafka_topic,
            client_config=security_config(kafka, secrets),
        )
    assert state.dir is not None
    return DirectoryStore(state.dir, keep=state.keep)


def heartbeat_interval(checkpoint_interval: float, idle_timeout: float) -> float:
    """How often stage 1 sends every partition's changed panes and watermarks to stage 2
    when nothing closes a pane: stage 2 learns how far each partition is (and that it is
    alive) from these, so they go out more often than checkpoints when ``idle_timeout``
    is short."""
    return min(checkpoint_interval, idle_timeout / 4)


class ConsumerLoop:
    """Stage 1 (the input topics into a :class:`Service`'s partitions, closed panes out to
    the panes topic) and, on its own thread, stage 2 (:class:`PanesLoop`), until stopped."""

    def __init__(
        self,
        service: Service,
        kafka: KafkaSettings,
        *,
        store: CheckpointStore | None = None,
        checkpoint_interval: float = 30.0,
        secrets: Mapping[str, str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_client(kafka.client, kafka.consumer, kafka.producer)  # UnsupportedSettingError
        self.service = service
        service.local = False  # updates travel through the panes topic
        self.kafka = kafka
        self.store = store
        self.checkpoint_interval = checkpoint_interval
        self.clock = clock
        self._secrets = dict(secrets or {})
        self.stopped = threading.Event()
        self.batches = 0
        self._consumer: ConsumerClient | None = None
        #: next offset to consume per partition, as far as the state reflects it
        self._positions: dict[TopicPartition, int] = {}
        self._last_checkpoint = time.monotonic()
        self._assigned_at = time.monotonic()
        self._observed = -OBSERVE_INTERVAL
        self._producer: ProducerClient | None = None
        self.heartbeat_interval = heartbeat_interval(
            checkpoint_interval, service.config.windows.idle_timeout
        )
        self._last_heartbeat = time.monotonic()
        self.dead_letter_log = DeadLetterLog()
        #: pane records sent, not yet known to be durable, and records to send again
        self._inflight: list[tuple[Delivery, PaneUpdate]] = []
        self._retry: list[PaneUpdate] = []
        self.panes = PanesLoop(
            service,
            kafka,
            store=store,
            checkpoint_interval=checkpoint_interval,
            client_config=self._client_config,
            clock=clock,
        )

    # -- clients -----------------------------------------------------------------------

    def _client_config(self) -> dict[str, Any]:
        return {
            "bootstrap_servers": self.kafka.bootstrap_servers.split(","),
            **security_config(self.kafka, self._secrets),
        }

    def _new_consumer(self) -> ConsumerClient:
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
        return new_consumer(self.kafka.client, config)

    def _new_producer(self) -> ProducerClient:
        config: dict[str, Any] = {
            **self._client_config(),
            "acks": "all",
            "linger_ms": 5,
            "client_id": "driftline-dlq",
        }
        config.update(self.kafka.producer)
        return new_producer(self.kafka.client, config)

    # -- the loop ----------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        started = self._start(stop)
        if started is None:  # stopped before Kafka answered
            self.stopped.set()
            return
        consumer, producer = self._consumer, self._producer = started
        stage2 = threading.Thread(
            target=self.panes.run, args=(stop,), name="driftline-stage2", daemon=True
        )
        stage2.start()
        # Both topics must be co-partitioned (same partition count, keyed by event_id, as
        # the PredictionLogger does) so that partition p of each meets in one instance.
        topics = [self.kafka.predictions_topic, self.kafka.ground_truth_topic]
        consumer.subscribe(topics, self)
        backoff = 0.5
        clean = False
        try:
            while not stop.is_set():
                try:
                    polled = consumer.poll(self.kafka.poll_timeout_ms, self.kafka.max_batch)
                except KafkaClientError as exc:  # broker trouble: keep serving, retry with backoff
                    log.warning("poll failed; retrying", extra={"error": repr(exc)})
                    self.service.kafka_connected = False
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                self._observe(consumer)
                if polled:
                    try:
                        decoded = self._dead_letter_all(producer, polled)
                    except KafkaClientError as exc:
                        log.error(
                            "dead-letter topic not writable; retrying the batch",
                            extra={
                                "topic": self.kafka.dead_letter_topic,
                                "error": str(exc),
                                "backoff_s": backoff,
                            },
                        )
                        for batch in polled:
                            consumer.seek(batch.tp, batch.first_offset)
                        stop.wait(backoff)
                        backoff = min(backoff * 2, 30.0)
                        continue
                    backoff = 0.5
                    now = self.clock()
                    for records, events in decoded:
                        tp = records.tp
                        self._positions[tp] = records.next_offset
                        version = self._version(tp.partition)
                        if isinstance(events, GroundTruthBatch):
                            self.service.handle_ground_truth(events, now, tp.partition, version)
                        else:
                            self._publish(self.service.handle(events, now, tp.partition, version))
                    self.batches += 1
                self.dead_letter_log.flush()
                if time.monotonic() - self._last_checkpoint >= self.checkpoint_interval:
                    self.checkpoint_and_commit(self._positions)
                elif time.monotonic() - self._last_heartbeat >= self.heartbeat_interval:
                    self._heartbeat()
            clean = True
        finally:
            self.dead_letter_log.flush(force=True)
            self.service.assigned = False
            if clean:  # after an error the state may be ahead of its offsets: no checkpoint
                self.checkpoint_and_commit(self._positions)
            stop.set()  # stage 2 too
            stage2.join(timeout=30)
            try:
                # leaving the group revokes the partitions, which publishes through the
                # producer: close the consumer first
                consumer.close()
            finally:
                producer.close(timeout=5)
                if self.store is not None:
                    self.store.close()
                self.stopped.set()

    def prepare_topics(self) -> None:
        """Create the topics that are missing and log what was found: the predictions
        topic with ``kafka.partitions``; the ground-truth and panes topics with as many
        partitions as the predictions topic (co-partitioned); the dead-letter topic with
        one. Raises ``KafkaError`` or ``ConsumersError`` when Kafka cannot be reached."""
        k = self.kafka
        servers = k.bootstrap_servers
        # fail fast while the broker is down: the caller retries with backoff, and a stop
        # request is never kept waiting long
        client = {**security_config(k, self._secrets), "bootstrap_timeout_ms": 5000}
        found = topic_partitions(servers, [k.predictions_topic], client)
        n = found.get(k.predictions_topic, k.partitions)
        ensure = functools.partial(ensure_topics, servers, timeout=5.0, client=client)
        created = ensure([k.predictions_topic], partitions=n)
        created += ensure([k.ground_truth_topic, k.panes_topic], partitions=n)
        created += ensure([k.dead_letter_topic], partitions=1)
        counts = topic_partitions(
            servers,
            [k.predictions_topic, k.ground_truth_topic, k.dead_letter_topic, k.panes_topic],
            client,
        )
        log.info(
            "topics ready: created %s; partitions %s",
            created or "none",
            counts,
            extra={"topics_created": created, "partitions": counts},
        )
        if counts.get(k.ground_truth_topic, n) != counts.get(k.predictions_topic, n):
            log.warning(
                "the ground-truth topic is not co-partitioned with the predictions topic: "
                "labels only join predictions of the same partition number",
                extra={"partitions": counts},
            )

    def _start(self, stop: threading.Event) -> tuple[ConsumerClient, ProducerClient] | None:
        """Consumer and producer, once Kafka answers: until then HTTP keeps serving,
        ``/readyz`` says why, and the attempt is repeated with backoff."""
        backoff = 0.5
        while not stop.is_set():
            try:
                self.prepare_topics()
                return self._new_consumer(), self._new_producer()
            except (KafkaError, ConsumersError, OSError) as exc:  # "not yet"; a bug raises
                self.service.kafka_connected = False
                log.warning(
                    "Kafka not reachable; retrying",
                    extra={
                        "bootstrap_servers": self.kafka.bootstrap_servers,
                        "error": repr(exc),
                        "backoff_s": backoff,
                    },
                )
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
        return None

    def _version(self, partition: int) -> int:
        """What the state of ``partition`` reflects: its offsets in both topics, summed
        (each only grows, so a later state has a larger version)."""
        return sum(o for tp, o in self._positions.items() if tp.partition == partition)

    def _publish(self, updates: Iterable[PaneUpdate]) -> None:
        """Send updates, one record per pane (a catch-up of many panes never makes one
        oversize record); a record the producer refuses is kept to be sent again."""
        for update in updates:
            pieces = [replace(update, panes=(p,)) for p in update.panes] or [update]
            for piece in pieces:
                assert self._producer is not None
                try:
                    delivery = self._producer.send(
                        self.kafka.panes_topic,
                        piece.model.encode(),
                        encode_update(piece, self.kafka.group_id),
                    )
                except Exception as exc:  # refused at once: too large, no metadata...
                    self._retry.append(piece)
                    log.error(
                        "pane record not sent; retried before the next checkpoint",
                        extra={"model": piece.model, "error": repr(exc)},
                    )
                    continue
                self._inflight.append((delivery, piece))

    def _heartbeat(self) -> None:
        """Watermarks (and changed panes) of the partitions held, not waited for."""
        self._last_heartbeat = time.monotonic()
        now = self.clock()
        for p in sorted({tp.partition for tp in self._positions}):
            self._publish(self.service.flush(p, now))

    def _publish_durably(self, partitions: Iterable[int]) -> None:
        """Every changed pane and watermark of ``partitions`` on the panes topic, acked,
        before a checkpoint says they are counted (raises ``KafkaError`` otherwise).

        Records not acked within ``PUBLISH_TIMEOUT`` stay in flight for the next attempt;
        refused ones are sent again (updates are idempotent). Raises
        ``KafkaClientError`` when some are not known to be durable."""
        if self._producer is None:
            return
        retry, self._retry = self._retry, []
        self._publish(retry)
        now = self.clock()
        for p in sorted(set(partitions)):
            self._publish(self.service.flush(p, now))
        if self._inflight:
            self._producer.flush(PUBLISH_TIMEOUT)  # raises while some are still pending
            inflight, self._inflight = self._inflight, []
            failed = [(d, piece) for d, piece in inflight if d.failed()]
            self._retry += [piece for _, piece in failed]
            if failed:
                raise KafkaClientError(
                    f"{len(failed)} pane records refused: {failed[0][0].error!r}"
                )
        if self._retry:
            raise KafkaClientError(f"{len(self._retry)} pane records could not be sent")

    def _observe(self, consumer: ConsumerClient) -> None:
        """Assignment, broker health and lag, for /readyz and /metrics: after a rebalance,
        otherwise every ``OBSERVE_INTERVAL`` (the client's metrics cost more than a poll)."""
        if self._observed > self._assigned_at and time.monotonic() - self._observed < (
            OBSERVE_INTERVAL
        ):
            return  # nothing new: no rebalance since, and read a moment ago
        self._observed = time.monotonic()
        assignment = consumer.assignment()
        self.service.assigned = bool(assignment)
        contact_age = consumer.contact_age()
        limit = max(2 * consumer.session_timeout, 5.0)
        if contact_age == float("inf"):  # no answer yet since the assignment
            contact_age = time.monotonic() - self._assigned_at
        healthy = 0 <= contact_age < limit
        self.service.kafka_connected = bool(assignment) and healthy
        lag = {}
        for tp in assignment:
            high = consumer.highwater(tp)
            if high is not None:
                position = self._positions.get(tp)
                if position is None:
                    continue
                lag[(tp.topic, tp.partition)] = max(high - position, 0)
        self.service.consumer_lag = lag

    # -- checkpoints -------------------------------------------------------------------

    def _key(self, partition: int) -> str:
        # One checkpoint per partition number: it holds the state of partition p of both
        # topics and the offset of each.
        return f"{self.kafka.group_id}/partition-{partition}"

    def checkpoint_and_commit(self, positions: Mapping[TopicPartition, int]) -> None:
        """Make the state of ``positions`` durable, then commit exactly those offsets."""
        self._last_checkpoint = self._last_heartbeat = time.monotonic()
        if not positions:
            return
        offsets = dict(positions)
        try:
            self._publish_durably(tp.partition for tp in offsets)
        except KafkaClientError as exc:
            self.service.kafka_connected = False
            log.error(
                "panes topic not writable; no checkpoint, offsets not committed",
                extra={"topic": self.kafka.panes_topic, "error": repr(exc)},
            )
            return
        try:
            self._save(offsets)
        except CheckpointError as exc:
            log.error("checkpoint failed; offsets not committed", extra={"error": str(exc)})
            return
        if self._consumer is not None:
            try:
                self._consumer.commit(offsets)
            except KafkaClientError as exc:  # the checkpoint is durable: a restart resumes from it
                log.warning("offset commit failed", extra={"error": repr(exc)})

    def _save(self, offsets: Mapping[TopicPartition, int]) -> None:
        if self.store is None:
            return
        start, size = time.perf_counter(), 0
        for partition in sorted({tp.partition for tp in offsets}):
            # every topic's position in this partition number, not just the ones passed in
            topic_offsets = {
                tp.topic: o for tp, o in self._positions.items() if tp.partition == partition
            }
            topic_offsets.update(
                {tp.topic: o for tp, o in offsets.items() if tp.partition == partition}
            )
            blob = encode_checkpoint(
                {
                    "partition": partition,
                    "offsets": topic_offsets,
                    "created_at": self.clock(),
                    "state": self.service.partition_state(partition),
                }
            )
            self.store.save(self._key(partition), blob)
            size += len(blob)
        self.service.checkpoint = CheckpointInfo(
            at=self.clock(), duration=time.perf_counter() - start, size=size
        )

    # -- rebalances: the client calls these while it polls ---------------------------------

    def assigned(self, partitions: list[TopicPartition]) -> None:
        """Restore each assigned partition from its newest usable checkpoint and seek to
        its offsets; with none usable, replay the partition from its earliest offset."""
        assert self._consumer is not None
        self._assigned_at = time.monotonic()
        by_number: dict[int, list[TopicPartition]] = {}
        for tp in partitions:
            by_number.setdefault(tp.partition, []).append(tp)
        for partition, tps in sorted(by_number.items()):
            if self.store is None:
                continue
            outcome, offsets = self._restore_one(partition)
            self.service.count_restore(outcome)
            if offsets is None:
                # no state: count everything the topic still holds (a group's committed
                # offsets without a checkpoint would skip it)
                self._consumer.seek_to_beginning(tps)
                for tp in tps:
                    self._positions.pop(tp, None)
                level = logging.ERROR if outcome == "rebuilt" else logging.INFO
                log.log(
                    level,
                    "no usable checkpoint; partition counted from the earliest retained offset",
                    extra={"partition": partition, "outcome": outcome},
                )
                continue
            for tp in tps:
                offset = offsets.get(tp.topic)
                if offset is None:
                    self._consumer.seek_to_beginning([tp])
                    continue
                self._positions[tp] = offset
                self._consumer.seek(tp, offset)
            log.info(
                "restored partition from checkpoint",
                extra={"partition": partition, "offsets": offsets, "outcome": outcome},
            )

    def _restore_one(self, partition: int) -> tuple[str, dict[str, int] | None]:
        """(outcome, offsets) of the newest checkpoint of ``partition`` that restores."""
        assert self.store is not None
        try:
            blobs = self.store.load_all(self._key(partition))
        except CheckpointError as exc:
            log.error("checkpoints unreadable", extra={"partition": partition, "error": str(exc)})
            return "rebuilt", None
        if not blobs:
            return "none", None
        for age, blob in enumerate(blobs):
            try:
                data = decode_checkpoint(blob)
                try:
                    offsets = {str(t): int(o) for t, o in data["offsets"].items()}
                    state = data["state"]
                except (KeyError, TypeError, ValueError, AttributeError) as exc:
                    raise RestoreError(f"malformed checkpoint: {exc!r}") from exc
                restarted = self.service.restore_partition(partition, state, self.clock())
            except CheckpointError as exc:  # unreadable, or RestoreError: state left empty
                log.error(
                    "checkpoint not usable; trying an older one",
                    extra={"partition": partition, "age": age, "error": str(exc)},
                )
                continue
            if restarted:
                log.warning(
                    "reference or binning changed since the checkpoint: windows restart "
                    "from its offsets, counters go on",
                    extra={"partition": partition, "models": restarted},
                )
                return "reference_changed", offsets
            return ("restored" if age == 0 else "restored_older"), offsets
        return "rebuilt", None

    def revoked(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """Checkpoint and forget partitions; return the offsets to commit."""
        return self._release(partitions, save=True)

    def lost(self, partitions: list[TopicPartition]) -> None:
        """Forget partitions another member may own already: the last interval's
        checkpoint stays, which a new owner (or we, when they come back) restores."""
        self._release(partitions, save=False)

    def _release(
        self, partitions: list[TopicPartition], *, save: bool
    ) -> dict[TopicPartition, int]:
        gone = set(partitions)
        mine = {tp: o for tp, o in self._positions.items() if tp in gone}
        offsets: dict[TopicPartition, int] = {}
        if save and mine:
            try:
                self._publish_durably(tp.partition for tp in mine)
                self._save(mine)
                offsets = mine
            except (CheckpointError, KafkaClientError) as exc:
                log.error("checkpoint on revocation failed", extra={"error": str(exc)})
        now = self.clock()
        for tp in gone:
            self._positions.pop(tp, None)
        for partition in {tp.partition for tp in gone}:
            self.service.drop_partition(partition, now)
        return offsets

    # -- dead letters ------------------------------------------------------------------

    def _dead_letter_all(
        self, producer: ProducerClient, polled: list[PartitionBatch]
    ) -> list[tuple[PartitionBatch, DecodedBatch | GroundTruthBatch]]:
        """Decode each partition's records; dead-letter the unusable ones, durably."""
        decoded: list[tuple[PartitionBatch, DecodedBatch | GroundTruthBatch]] = []
        deliveries = []
        for records in sorted(polled, key=lambda b: b.tp):
            batch: DecodedBatch | GroundTruthBatch
            if records.tp.topic == self.kafka.ground_truth_topic:
                decoder = self.service.ground_truth_decoder
                batch = decoder.decode(records.values, records.times, now=self.clock())
            else:
                batch = self.service.decoder.decode(records.values, records.times, now=self.clock())
            decoded.append((records, batch))
            for inv in batch.invalid:
                deliveries.append(self._send_dead_letter(producer, records.record(inv.index), inv))
        if deliveries:
            producer.flush(30.0)
            failed = [d for d in deliveries if d.failed() or not d.done()]
            if failed:
                raise KafkaClientError(f"dead letter not delivered: {failed[0].error!r}")
        return decoded

    def _send_dead_letter(self, producer: ProducerClient, record: Record, inv: Invalid) -> Delivery:
        self.dead_letter_log.record(
            inv.model, inv.reason, record.topic, record.partition, record.offset, inv.message
        )
        return producer.send(
            self.kafka.dead_letter_topic,
            record.key,
            record.value,
            dead_letter_headers(record, inv.reason, inv.message, inv.model),
        )
