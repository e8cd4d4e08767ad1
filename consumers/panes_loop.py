"""Stage 2's consumer: the panes topic, in a second consumer group, into the models owned.

Kafka's group protocol is the only coordination: the panes partitions this instance is
assigned are the models it owns. A panes partition's merged state (and its alert state) is
checkpointed in the same store as stage 1's, with the panes offset it reflects; it is
restored when the partition is assigned, checkpointed and committed when it is revoked,
and checkpointed at once when its alert state changes (so a notification is never sent
twice by two owners in turn). Replayed or duplicated records change nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from consumers.checkpoints import (
    CheckpointError,
    CheckpointStore,
    RestoreError,
    decode_checkpoint,
    encode_checkpoint,
)
from consumers.kafka_client import (
    ConsumerClient,
    KafkaClientError,
    PartitionBatch,
    TopicPartition,
    new_consumer,
)
from consumers.pane_records import decode_update
from consumers.service import Service
from monitor.config import KafkaSettings
from monitor.pane_merge import PaneUpdate

__all__ = ["PanesLoop"]

log = logging.getLogger("driftline.stage2")

#: pane records per poll (kafka-python's default): each can start an evaluation, and the
#: loop must poll again within the group's max_poll_interval_ms
PANES_BATCH = 500

#: how often idle partitions are re-examined (seconds, wall clock)
TICK_SECONDS = 1.0


#: a stage 2 without any panes partition this long after start says so in the log
UNASSIGNED_WARNING_SECONDS = 60.0


class PanesLoop:
    """Consumes the panes topic into a :class:`Service`'s stage 2 until stopped."""

    def __init__(
        self,
        service: Service,
        kafka: KafkaSettings,
        *,
        store: CheckpointStore | None,
        checkpoint_interval: float,
        client_config: Callable[[], dict[str, Any]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.service = service
        self.kafka = kafka
        self.store = store
        self.checkpoint_interval = checkpoint_interval
        self.clock = clock
        self._client_config = client_config
        self.group_id = f"{kafka.group_id}.panes"
        self._consumer: ConsumerClient | None = None
        self._positions: dict[TopicPartition, int] = {}
        self.records = 0
        #: records refused (other format, corrupt) and from other deployments
        self.rejected = 0
        self.foreign = 0

    def _new_consumer(self) -> ConsumerClient:
        config: dict[str, Any] = {
            **self._client_config(),
            "group_id": self.group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "client_id": "driftline-stage2",
        }
        config.update(self.kafka.consumer)
        return new_consumer(self.kafka.client, config)

    def run(self, stop: threading.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            try:
                self._run(stop)
                return
            except KafkaClientError as exc:  # broker unreachable: keep trying, as stage 1 does
                log.warning("stage 2 cannot reach Kafka; retrying", extra={"error": repr(exc)})
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)
            except Exception as exc:  # reported by /readyz; the consumer side goes on
                log.exception("stage 2 stopped")
                self.service.stage2_error = repr(exc)
                return

    def _run(self, stop: threading.Event) -> None:
        consumer = self._consumer = self._new_consumer()
        consumer.subscribe([self.kafka.panes_topic], self)
        last_checkpoint = last_tick = started = time.monotonic()
        backoff = 0.5
        warned = False
        try:
            while not stop.is_set():
                if not warned and time.monotonic() - started > UNASSIGNED_WARNING_SECONDS:
                    warned = True
                    if not consumer.assignment():
                        log.warning(
                            "stage 2 owns no model after %.0f s: another instance owns them "
                            "all, or its group join is slow",
                            UNASSIGNED_WARNING_SECONDS,
                        )
                try:
                    polled = consumer.poll(self.kafka.poll_timeout_ms, PANES_BATCH)
                except KafkaClientError as exc:
                    log.warning("panes poll failed; retrying", extra={"error": repr(exc)})
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 30.0)
                    continue
                backoff = 0.5
                now = self.clock()
                for records in sorted(polled, key=lambda b: b.tp.partition):
                    tp = records.tp
                    updates = self._decode(records)
                    self._positions[tp] = records.next_offset
                    self.records += len(records)
                    if updates and self._guarded(
                        self.service.apply_panes, tp.partition, updates, now
                    ):
                        self._checkpoint([tp])
                if time.monotonic() - last_tick >= TICK_SECONDS:
                    last_tick = time.monotonic()
                    changed = self._guarded(self.service.tick, now) or []
                    if changed:
                        self._checkpoint([tp for tp in self._positions if tp.partition in changed])
                if time.monotonic() - last_checkpoint >= self.checkpoint_interval:
                    last_checkpoint = time.monotonic()
                    self._checkpoint(list(self._positions))
        finally:
            self._checkpoint(list(self._positions))
            consumer.close()

    @staticmethod
    def _guarded(call: Callable[..., Any], *args: Any) -> Any:
        """One failing evaluation, alert or outbox write is logged; the loop goes on (the
        records stay counted: a poison record cannot stop every owner in turn)."""
        try:
            return call(*args)
        except Exception:
            log.exception("stage-2 step failed", extra={"step": getattr(call, "__name__", "")})
            return None

    def _decode(self, records: PartitionBatch) -> list[PaneUpdate]:
        updates = []
        for i, value in enumerate(records.values):
            try:
                source, update = decode_update(value or b"")
            except Exception as exc:  # PaneRecordError, or anything a hostile peer finds
                self.rejected += 1
                if self.rejected == 1 or self.rejected % 1000 == 0:
                    log.warning(
                        "pane record ignored",
                        extra={
                            "offset": records.first_offset + i,
                            "error": str(exc),
                            "ignored": self.rejected,
                        },
                    )
                continue
            if source != self.kafka.group_id:
                self.foreign += 1  # another deployment sharing the topic
                continue
            updates.append(update)
        return updates

    # -- checkpoints ---------------------------------------------------------------------

    def _key(self, unit: int) -> str:
        return f"{self.group_id}/unit-{unit}"

    def _checkpoint(self, tps: Iterable[TopicPartition], *, commit: bool = True) -> bool:
        """Save the state of ``tps`` with their offsets, then commit them; False (nothing
        committed) when the store refused."""
        offsets = {tp: self._positions[tp] for tp in tps if tp in self._positions}
        if not offsets:
            return True
        if self.store is not None:
            try:
                for tp, offset in sorted(offsets.items(), key=lambda kv: kv[0].partition):
                    blob = encode_checkpoint(
                        {
                            "unit": tp.partition,
                            "offsets": {tp.topic: offset},
                            "created_at": self.clock(),
                            "state": self.service.unit_state(tp.partition),
                        }
                    )
                    self.store.save(self._key(tp.partition), blob)
            except CheckpointError as exc:
                log.error("stage-2 checkpoint failed; not committed", extra={"error": str(exc)})
                return False
        if commit and self._consumer is not None:
            try:
                self._consumer.commit(offsets)
            except KafkaClientError as exc:
                log.warning("panes offset commit failed", extra={"error": repr(exc)})
        return True

    # -- rebalances: the client calls these while it polls ---------------------------------

    def assigned(self, assigned: list[TopicPartition]) -> None:
        assert self._consumer is not None
        for tp in sorted(assigned, key=lambda t: t.partition):
            try:
                blob = self.store.load(self._key(tp.partition)) if self.store else None
                if blob is None:
                    self._rebuild(tp)
                    continue
                data = decode_checkpoint(blob)
                try:
                    offset = int(data["offsets"][tp.topic])
                    state = data["state"]
                except (KeyError, TypeError, ValueError) as exc:
                    raise RestoreError(f"malformed stage-2 checkpoint: {exc!r}") from exc
                self.service.restore_unit(tp.partition, state, self.clock())
            except CheckpointError as exc:
                log.error(
                    "stage-2 checkpoint not restored; rebuilt from the panes topic",
                    extra={"unit": tp.partition, "error": str(exc)},
                )
                self._rebuild(tp)
                continue
            self._positions[tp] = offset
            self._consumer.seek(tp, offset)
            log.info("took over models", extra={"unit": tp.partition, "offset": offset})

    def _rebuild(self, tp: TopicPartition) -> None:
        """No usable checkpoint: merge the whole panes partition again (updates are
        idempotent, so replaying what was merged before changes nothing)."""
        self.service.drop_unit(tp.partition)
        self._positions.pop(tp, None)
        assert self._consumer is not None
        self._consumer.seek_to_beginning([tp])

    def revoked(self, revoked: list[TopicPartition]) -> dict[TopicPartition, int]:
        gone = set(revoked)
        offsets: dict[TopicPartition, int] = {}
        if self._checkpoint(gone, commit=False):
            offsets = {tp: o for tp, o in self._positions.items() if tp in gone}
        self._drop(gone)
        return offsets

    def lost(self, lost: list[TopicPartition]) -> None:
        self._drop(set(lost))

    def _drop(self, gone: set[TopicPartition]) -> None:
        for tp in gone:
            self._positions.pop(tp, None)
            self.service.drop_unit(tp.partition)
