"""Stage 1: the state of each input partition — decoded batches into panes, labels joined.

Every input partition holds, per model, a :class:`~monitor.model_state.ModelMonitor` (its
own panes in event time), a :class:`~monitor.label_join.LabelJoin` and its counters. It
evaluates nothing: closed panes leave as :class:`~monitor.pane_merge.PaneUpdate` records
for stage 2, which merges every partition of a model. A partition is one unit of
``snapshot()`` / ``restore()``: a checkpoint either restores it whole or raises
:class:`RestoreError` and leaves it empty, never half restored.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from consumers.checkpoints import RestoreError
from consumers.decoding import DecodedBatch, GroundTruthBatch
from consumers.model_specs import ModelSpec
from monitor.events import EventBatch
from monitor.label_join import Joined, LabelJoin
from monitor.model_state import DELAY_BUCKETS, LATENCY_BUCKETS, ModelMonitor
from monitor.pane_merge import PaneUpdate
from monitor.reference import ReferenceProfile
from monitor.schema import FeatureSpec
from monitor.stream_reference import MAX_NAME_LENGTH, typed_batch

__all__ = ["InputPartitions", "PartitionCounters", "RestoreError"]

log = logging.getLogger("driftline.partitions")

#: Distinct unexpected feature names kept per model; the rest are counted together, so a
#: producer sending random keys cannot blow up the metric's cardinality.
MAX_UNEXPECTED_NAMES = 50
OTHER_FEATURES = "__other__"
#: versions waiting to become live that a model's slot remembers (the smallest are dropped)
MAX_CANDIDATES = 64


@dataclass
class _Slot:
    """One model in one input partition (or one version of it: see ``versions``)."""

    join: LabelJoin
    monitor: ModelMonitor | None = None
    predictions: int = 0
    ground_truth: int = 0
    #: wall-clock time of the last prediction of this model in this partition
    active_at: float = -math.inf
    #: predictions of another version for a request this slot already holds (shadows)
    shadow: int = 0
    #: the model's live versions here, least recently seen first: version -> wall clock
    live: dict[str, float] = field(default_factory=dict)
    #: each live version's own window and label join, while two or more are live
    versions: dict[str, _Slot] = field(default_factory=dict)
    #: versions not live yet here, with the events they sent (bounded)
    candidates: dict[str, int] = field(default_factory=dict)


@dataclass
class PartitionCounters:
    """Consumer-side counters of one model, summed over the partitions held here."""

    predictions: int = 0
    ground_truth: int = 0
    #: predictions of a second version for a request already answered (shadow traffic)
    shadow: int = 0
    late: int = 0
    future: int = 0
    open_events: int = 0
    latency_buckets: np.ndarray = field(
        default_factory=lambda: np.zeros(len(LATENCY_BUCKETS) + 1, dtype=np.int64)
    )
    latency_sum: float = 0.0
    delay_buckets: np.ndarray = field(
        default_factory=lambda: np.zeros(len(DELAY_BUCKETS) + 1, dtype=np.int64)
    )
    delay_sum: float = 0.0
    unjoined: Counter[str] = field(default_factory=Counter)
    labels_outside_window: int = 0
    labels_unknown_class: int = 0
    window_events: int = 0  # this instance's partitions only (the merged count is stage 2's)


class InputPartitions:
    """Per-partition, per-model panes and label joins; what stage 1 publishes."""

    def __init__(
        self,
        specs: Mapping[str, ModelSpec],
        on_schema: Callable[[str, Sequence[FeatureSpec]], None],
        max_id_length: int = 256,
    ) -> None:
        self.specs = specs
        self.max_id_length = max_id_length
        self._on_schema = on_schema
        self._slots: dict[int, dict[str, _Slot]] = {}
        self._invalid: dict[int, Counter[tuple[str, str]]] = {}
        self._versions: dict[int, int] = {}
        #: per partition: grows at every restore or rebuild (milliseconds of wall clock,
        #: at least the checkpoint's + 1), so a replay's updates replace the old history's
        self._epochs: dict[int, int] = {}
        #: unexpected feature names counted per partition and model (checkpointed with
        #: the partition, so a replay does not count them twice)
        self._extra: dict[int, dict[str, Counter[str]]] = {}
        self._warned_unknown: set[str] = set()

    # -- feeding ---------------------------------------------------------------------------

    def _slot(self, partition: int, model: str) -> _Slot:
        slots = self._slots.setdefault(partition, {})
        slot = slots.get(model)
        if slot is None:
            labels = self.specs[model].settings.labels
            capacity = self.specs[model].settings.join_capacity(self.max_id_length)
            slot = slots[model] = _Slot(LabelJoin(ttl=labels.ttl, capacity=capacity))
        return slot

    def _monitor(self, slot: _Slot, spec: ModelSpec) -> ModelMonitor | None:
        if slot.monitor is None and spec.profile is not None:
            slot.monitor = spec.new_monitor()
        return slot.monitor

    def _bump(self, partition: int, version: int | None, n: int, now: float) -> int:
        self._epochs.setdefault(partition, int(now * 1000))
        v = self._versions.get(partition, 0) + n if version is None else version
        self._versions[partition] = v
        return v

    def handle(
        self, decoded: DecodedBatch, now: float, partition: int, version: int | None = None
    ) -> list[PaneUpdate]:
        """Count a decoded batch; return updates for the models whose panes closed.

        ``version`` is the partition's source offsets after the batch (default: a count).
        """
        v = self._bump(partition, version, len(decoded.invalid) + decoded.valid, now)
        invalid = self._invalid.setdefault(partition, Counter())
        for inv in decoded.invalid:
            invalid[(inv.model, inv.reason)] += 1
        for name, extra in decoded.extra_features.items():
            self._count_extra(partition, name, extra)
        updates = []
        for name, batch in decoded.batches.items():
            spec = self.specs[name]
            slot = self._slot(partition, name)
            slot.predictions += len(batch)
            slot.active_at = now
            own = batch
            if spec.stream_reference is not None:
                first = spec.profile is None
                batch, taken = self._feed_stream_reference(spec, batch, now)
                own = batch.select(~taken)  # a version is never judged against itself
                if first and spec.profile is not None:
                    # the events that became the model's reference are not windowed by it
                    mine = batch.model_version == spec.profile.model_version
                    batch = batch.select(~(taken & mine))
            versioned = self._live_versions(partition, slot, spec, batch, now)
            monitor = self._monitor(slot, spec)
            if monitor is not None:
                before = monitor.window.watermark
                if self._ingest(name, slot, monitor, batch, now):
                    updates.append(self._update(partition, name, slot, monitor, v))
                jump = monitor.window.watermark - before
                if math.isfinite(before) and jump > self._jump_warning(spec):
                    log.warning(
                        "watermark jumped",
                        extra={"model": name, "partition": partition, "seconds": round(jump, 3)},
                    )
            for model_version, vslot in versioned.items():
                profile = spec.version_profile(model_version)
                if profile is None:
                    continue  # its reference is still being collected
                if vslot.monitor is None:
                    vslot.monitor = spec.new_monitor(profile)
                mine = own.select(own.model_version == model_version)
                vslot.predictions += len(mine)
                vslot.active_at = now
                if self._ingest(name, vslot, vslot.monitor, mine, now, slot.join):
                    updates.append(
                        self._update(partition, name, vslot, vslot.monitor, v, model_version)
                    )
        return updates

    def _ingest(
        self,
        model: str,
        slot: _Slot,
        monitor: ModelMonitor,
        batch: EventBatch,
        now: float,
        answered: LabelJoin | None = None,
    ) -> bool:
        """Count predictions in ``slot``'s window and join them; True when its panes closed.

        A prediction whose event id the slot already holds (a redelivery, or a shadow
        version answering the same request) joins nothing and is not counted again. A
        version's predictions also join the labels the model's join (``answered``) holds,
        pending or already joined to another version's prediction."""
        if len(batch) == 0:
            return False
        fresh = slot.join.unseen(batch.event_id)
        counted = batch
        if not fresh.all():
            counted = batch.select(fresh)
            shadow = slot.join.shadows(batch.event_id, batch.model_version, fresh)
            if shadow.any():  # joined in their own version's window, not the model's
                slot.shadow += int(shadow.sum())
                batch = batch.select(~shadow)
        moved = monitor.ingest(counted, now)
        joined = slot.join.add_predictions(
            batch.event_id,
            batch.event_time,
            batch.score,
            batch.label,
            batch.model_version,
            now,
            segment=monitor.segment_cells(batch),
            kpi=monitor.kpi_values(batch),
        )
        if len(joined):
            self._add_joined(model, monitor, joined)
        if answered is not None:
            at, y_true, label_time = answered.answers(batch.event_id)
            done = set(joined.event_id)
            keep = [j for j, i in enumerate(at.tolist()) if batch.event_id[i] not in done]
            if keep:
                ids = [batch.event_id[i] for i in at[keep].tolist()]
                late = slot.join.add_labels(ids, y_true[keep], label_time[keep], now)
                if len(late):
                    self._add_joined(model, monitor, late)
        return moved

    def _live_versions(
        self, partition: int, slot: _Slot, spec: ModelSpec, batch: EventBatch, now: float
    ) -> dict[str, _Slot]:
        """Note the versions of ``batch``; return the version slots to count it in.

        A version becomes live once it has sent ``drift.min_events`` events here (fewer get
        no verdict anyway, and a stray version never takes a place) and while fewer than
        ``versions.live`` are live; it stays live until it has had no event for
        ``versions.retire_after``, so versions beyond the bound wait for a place instead of
        pushing the others out. While this instance has two live versions or more of the
        model, in any of its partitions, each live version has its own window here."""
        if spec.live_versions < 2:
            return {}
        seen = [v for v in dict.fromkeys(batch.model_version.tolist()) if v and isinstance(v, str)]
        if not seen:
            return {}
        versions = batch.model_version
        for version in seen:
            if version in slot.live:
                slot.live[version] = now
        self._retire(partition, slot, spec, now)  # places freed first
        for version in seen:
            if version in slot.live:
                continue
            n = slot.candidates.get(version, 0) + int(np.count_nonzero(versions == version))
            if n >= spec.policy.min_events and len(slot.live) < spec.live_versions:
                slot.candidates.pop(version, None)
                slot.live[version] = now
                continue
            if version not in slot.candidates and len(slot.candidates) >= MAX_CANDIDATES:
                del slot.candidates[min(slot.candidates, key=slot.candidates.__getitem__)]
            slot.candidates[version] = n
        if not self._side_by_side(spec.name):
            slot.versions.clear()
            return {}
        capacity = spec.settings.join_capacity(self.max_id_length)
        for version in slot.live:
            if version not in slot.versions:
                slot.versions[version] = _Slot(
                    LabelJoin(ttl=spec.settings.labels.ttl, capacity=_share(capacity, spec))
                )
        return {v: slot.versions[v] for v in seen if v in slot.versions}

    def _side_by_side(self, model: str) -> bool:
        """Whether two versions or more of ``model`` are live in this instance."""
        live: set[str] = set()
        for slots in self._slots.values():
            slot = slots.get(model)
            if slot is not None:
                live.update(slot.live)
                if len(live) >= 2:
                    return True
        return False

    @staticmethod
    def _retire(partition: int, slot: _Slot, spec: ModelSpec, now: float) -> None:
        for version, seen_at in list(slot.live.items()):
            if now - seen_at > spec.retire_after:
                del slot.live[version]
        for version in list(slot.versions):
            if version not in slot.live:
                del slot.versions[version]
                log.info(
                    "model version retired",
                    extra={"model": spec.name, "partition": partition, "model_version": version},
                )

    def handle_ground_truth(
        self, batch: GroundTruthBatch, now: float, partition: int, version: int | None = None
    ) -> None:
        """Join labels to their predictions; the panes they change go out with the next
        :meth:`flush` (at most once per checkpoint interval)."""
        self._bump(partition, version, len(batch.invalid) + batch.valid, now)
        invalid = self._invalid.setdefault(partition, Counter())
        for inv in batch.invalid:
            invalid[(inv.model, inv.reason)] += 1
        for name, (ids, y_true, times) in batch.labels.items():
            slot = self._slot(partition, name)
            slot.ground_truth += len(ids)
            joined = slot.join.add_labels(ids, y_true, times, now)
            if len(joined) and slot.monitor is not None:
                self._add_joined(name, slot.monitor, joined)
            # one ground truth answers every version that predicted the same request
            for vslot in slot.versions.values():
                vslot.ground_truth += len(ids)
                joined = vslot.join.add_labels(ids, y_true, times, now)
                if len(joined) and vslot.monitor is not None:
                    vslot.monitor.add_joined(joined)

    def _add_joined(self, model: str, monitor: ModelMonitor, joined: Joined) -> None:
        """Count joined pairs; the first label of a class the model does not know is
        warned about once per model (then only counted)."""
        before = monitor.labels_unknown_class
        monitor.add_joined(joined)
        if monitor.labels_unknown_class > before and model not in self._warned_unknown:
            self._warned_unknown.add(model)
            log.warning(
                "a label matches no class of the model; counted in "
                "driftline_labels_unknown_class_total (labels are compared after the "
                "normalisation the README describes: check positive_label/negative_label)",
                extra={"model": model, "label": str(monitor.unknown_label_sample)[:100]},
            )

    @staticmethod
    def _jump_warning(spec: ModelSpec) -> float:
        """A watermark move worth a warning: more than a window at once."""
        return spec.windows.size_panes * spec.windows.pane

    def flush(self, partition: int, now: float | None = None) -> list[PaneUpdate]:
        """Every model's changed closed panes and its watermark (a heartbeat when nothing
        changed), so that stage 2 also learns how far an idle partition is. With ``now``,
        live models' event time first moves on with the clock (see ``ModelMonitor.tick``)
        and idle versions are retired."""
        v = self._versions.get(partition, 0)
        slots = sorted(self._slots.get(partition, {}).items())
        if now is not None:
            for name, slot in slots:
                if slot.live:
                    self._retire(partition, slot, self.specs[name], now)
                    if not self._side_by_side(name):
                        slot.versions.clear()
                for s in (slot, *slot.versions.values()):
                    if s.monitor is not None:
                        s.monitor.tick(now)
            for name, _ in slots:
                self._promote(self.specs[name])
        out = []
        for name, slot in slots:
            if slot.monitor is not None:
                out.append(self._update(partition, name, slot, slot.monitor, v))
            for version, vslot in sorted(slot.versions.items()):
                if vslot.monitor is not None:
                    out.append(self._update(partition, name, vslot, vslot.monitor, v, version))
        return out

    def _promote(self, spec: ModelSpec) -> None:
        """A stream-built model reference whose version is no longer live anywhere here
        gives way to the newest live version's own (the rollout is over): windows restart."""
        if spec.stream_reference is None or spec.profile is None:
            return
        live: dict[str, float] = {}
        for slots in self._slots.values():
            slot = slots.get(spec.name)
            if slot is not None:
                for version, seen_at in slot.live.items():
                    live[version] = max(seen_at, live.get(version, -math.inf))
        if not live or spec.profile.model_version in (None, *live):
            return
        newest = sorted(live, key=live.__getitem__, reverse=True)
        profile = next(
            (spec.version_profiles[v] for v in newest if v in spec.version_profiles), None
        )
        if profile is not None:
            log.info(
                "the model's reference moves to its live version",
                extra={"model": spec.name, "model_version": profile.model_version},
            )
            self._set_stream_profile(spec, profile)

    def _update(
        self,
        partition: int,
        model: str,
        slot: _Slot,
        monitor: ModelMonitor,
        version: int,
        model_version: str | None = None,
    ) -> PaneUpdate:
        spec = self.specs[model]
        w = monitor.window
        return PaneUpdate(
            model=model,
            partition=partition,
            version=version,
            watermark=w.watermark,
            last_closed=w.last_closed,
            active_at=slot.active_at,
            fingerprint=monitor.layout.fingerprint,
            panes=monitor.take_closed(),
            profile=monitor.profile.to_dict() if spec.stream_reference is not None else None,
            epoch=self._epochs.get(partition, 0),
            model_version=model_version,
        )

    def _count_extra(self, partition: int, model: str, extra: Counter[str]) -> None:
        """Count unexpected features; names past the first few share one label value."""
        counted = self._extra.setdefault(partition, {}).setdefault(model, Counter())
        _add_capped(counted, extra)

    @property
    def extra_features(self) -> dict[str, Counter[str]]:
        """Unexpected feature names per model over the partitions held (at most
        ``MAX_UNEXPECTED_NAMES`` names each, the rest under ``OTHER_FEATURES``)."""
        out: dict[str, Counter[str]] = {name: Counter() for name in self.specs}
        for models in self._extra.values():
            for model, counted in models.items():
                if model in out:
                    _add_capped(out[model], counted)
        return out

    def _feed_stream_reference(
        self, spec: ModelSpec, batch: EventBatch, now: float
    ) -> tuple[EventBatch, NDArray[np.bool_]]:
        """Give the events of the versions being collected to their references; return the
        batch (typed as the model's reference) and which of its events were taken."""
        ref = spec.stream_reference
        assert ref is not None
        taken, profiles = ref.take(batch, now)
        for profile in profiles:
            log.info(
                "reference built from the stream",
                extra={
                    "model": profile.model,
                    "model_version": profile.model_version,
                    "events": profile.n_events,
                },
            )
            if spec.profile is None or spec.live_versions < 2:
                self._set_stream_profile(spec, profile)
            else:
                # a later version (a canary, a challenger) judges its own window by it
                spec.add_version_profile(profile)
        return _typed(batch, spec.profile), taken

    def _set_stream_profile(self, spec: ModelSpec, profile: ReferenceProfile) -> None:
        # A new reference means new bins: windows counted against the old one restart.
        spec.set_profile(profile)
        for slots in self._slots.values():
            if spec.name in slots:
                slots[spec.name].monitor = None
        self._on_schema(spec.name, profile.specs)

    # -- checkpoints -----------------------------------------------------------------------

    def snapshot(self, partition: int) -> dict[str, Any]:
        """Everything counted from ``partition``, as plain data for a checkpoint."""
        models: dict[str, Any] = {}
        for name, slot in sorted(self._slots.get(partition, {}).items()):
            spec = self.specs[name]
            models[name] = {
                **_slot_data(slot, spec.profile if spec.stream_reference else None),
                "live": [[v, t] for v, t in slot.live.items()],
                "versions": {
                    v: _slot_data(
                        vs, vs.monitor.profile if spec.stream_reference and vs.monitor else None
                    )
                    for v, vs in sorted(slot.versions.items())
                },
            }
        invalid = self._invalid.get(partition, Counter())
        return {
            "models": models,
            "version": self._versions.get(partition, 0),
            "epoch": self._epochs.get(partition, 0),
            "invalid": [[model, reason, n] for (model, reason), n in sorted(invalid.items())],
            "unexpected": [
                [model, name, n]
                for model, counted in sorted(self._extra.get(partition, {}).items())
                for name, n in sorted(counted.items())
            ],
        }

    def restore(self, partition: int, state: Mapping[str, Any], now: float) -> list[str]:
        """Replace ``partition``'s state with a snapshot's, whole or not at all; return the
        models whose windows restart (their panes were counted against another reference
        or binning than the configured one: their counters and label joins are kept).

        Raises :class:`RestoreError` (the partition is then left empty) when the snapshot is
        malformed. Configured label TTL and capacity win over the snapshot's.
        """
        self.drop(partition)
        try:
            slots, profiles, restarted = self._restored_slots(state)
            invalid = Counter(
                {(str(model), str(reason)): int(n) for model, reason, n in state["invalid"]}
            )
            extra: dict[str, Counter[str]] = {}
            for model, name, n in state.get("unexpected", []):
                if str(model) in self.specs:
                    extra.setdefault(str(model), Counter())[str(name)[:200]] = int(n)
            version = int(state.get("version", 0))
            epoch = max(int(state.get("epoch", 0)) + 1, int(now * 1000))
        except RestoreError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise RestoreError(f"malformed partition state: {exc!r}") from exc
        for name, profile in profiles.items():
            spec = self.specs[name]
            self._set_stream_profile(spec, profile)
            assert spec.stream_reference is not None
            spec.stream_reference.profiled_versions.add(profile.model_version)
        self._slots[partition] = slots
        self._invalid[partition] = invalid
        self._extra[partition] = extra
        self._versions[partition] = version
        self._epochs[partition] = epoch
        # a new epoch: every closed pane goes out again, replacing what the old history
        # published after this checkpoint
        self.mark_all_changed(partition)
        return restarted

    def _restored_slots(
        self, state: Mapping[str, Any]
    ) -> tuple[dict[str, _Slot], dict[str, ReferenceProfile], list[str]]:
        slots: dict[str, _Slot] = {}
        profiles: dict[str, ReferenceProfile] = {}
        restarted: list[str] = []
        for name, data in state["models"].items():
            spec = self.specs.get(name)
            if spec is None:
                log.warning("checkpoint has unknown model %s; ignored", name)
                continue
            profile = spec.profile
            if profile is None and data.get("profile") is not None and spec.stream_reference:
                # a reference built from the stream before the restart: windows counted
                # against it go on (once a reference is in use, another partition's older
                # one only restarts that partition's windows)
                profile = profiles[name] = ReferenceProfile.from_dict(data["profile"])
            slot = self._restored_slot(spec, data, profile, restarted)
            slot.live = {str(v): float(t) for v, t in data.get("live", [])}
            for version, vdata in data.get("versions", {}).items():
                vprofile = spec.version_profile(str(version))
                if vprofile is None and vdata.get("profile") is not None:
                    vprofile = ReferenceProfile.from_dict(vdata["profile"])
                    if vprofile.model_version != version:
                        raise RestoreError(f"model {name}: version {version} has another's profile")
                    spec.add_version_profile(vprofile)
                slot.versions[str(version)] = self._restored_slot(
                    spec, vdata, vprofile, [], versions=True
                )
            slots[name] = slot
        return slots, profiles, restarted

    def _restored_slot(
        self,
        spec: ModelSpec,
        data: Mapping[str, Any],
        profile: ReferenceProfile | None,
        restarted: list[str],
        *,
        versions: bool = False,
    ) -> _Slot:
        """One slot of a snapshot (``versions``: a version's, whose join is smaller)."""
        labels = spec.settings.labels
        capacity = spec.settings.join_capacity(self.max_id_length)
        slot = _Slot(
            LabelJoin.restore(
                data["join"],
                ttl=labels.ttl,
                capacity=_share(capacity, spec) if versions else capacity,
            ),
            predictions=int(data["predictions"]),
            ground_truth=int(data.get("ground_truth", 0)),
            shadow=int(data.get("shadow", 0)),
            active_at=float(data.get("active_at", -math.inf)),
        )
        if data["monitor"] is not None:
            if profile is None:
                raise RestoreError(f"model {spec.name}: windows in the checkpoint, no reference")
            monitor = spec.new_monitor(profile)
            same = data.get("fingerprint") == monitor.layout.fingerprint
            monitor.restore(data["monitor"], windows=same)
            if not same:
                restarted.append(spec.name)
                slot.join.forget_layout()  # segments or KPIs may have changed
            slot.monitor = monitor
        return slot

    def drop(self, partition: int) -> None:
        """Forget ``partition`` (it was handed to another instance)."""
        self._slots.pop(partition, None)
        self._invalid.pop(partition, None)
        self._extra.pop(partition, None)
        self._versions.pop(partition, None)
        self._epochs.pop(partition, None)

    def mark_all_changed(self, partition: int | None = None) -> None:
        """Every closed pane still in the window (of ``partition``, or of all) goes out with
        the next :meth:`flush`."""
        for p, slots in self._slots.items():
            if partition is None or p == partition:
                for slot in slots.values():
                    if slot.monitor is not None:
                        slot.monitor.mark_all_changed()

    # -- reading ---------------------------------------------------------------------------

    @property
    def partitions(self) -> list[int]:
        return sorted(self._slots)

    def counters(self) -> dict[str, PartitionCounters]:
        out = {name: PartitionCounters() for name in self.specs}
        for slots in self._slots.values():
            for name, slot in slots.items():
                c = out[name]
                c.predictions += slot.predictions
                c.ground_truth += slot.ground_truth
                c.shadow += slot.shadow
                c.unjoined.update(slot.join.dropped)
                m = slot.monitor
                if m is None:
                    continue
                c.late += m.late_total
                c.future += m.future_total
                c.open_events += m.open_events
                c.latency_buckets += m.latency_buckets
                c.latency_sum += m.latency_sum
                c.delay_buckets += m.delay_buckets
                c.delay_sum += m.delay_sum
                c.labels_outside_window += m.labels_outside_window
                c.labels_unknown_class += m.labels_unknown_class
                c.window_events += m.window.window.events
        return out

    def joins(self, model: str) -> list[LabelJoin]:
        """The label joins of ``model`` in the partitions held here."""
        return [slots[model].join for slots in self._slots.values() if model in slots]

    def invalid(self) -> Counter[tuple[str, str]]:
        return sum(self._invalid.values(), Counter())


def _slot_data(slot: _Slot, profile: ReferenceProfile | None) -> dict[str, Any]:
    """A slot as plain data; ``profile``: a stream-built reference to keep with it."""
    return {
        "predictions": slot.predictions,
        "ground_truth": slot.ground_truth,
        "shadow": slot.shadow,
        "active_at": slot.active_at,
        "join": slot.join.snapshot(),
        "fingerprint": slot.monitor.layout.fingerprint if slot.monitor else None,
        "monitor": slot.monitor.snapshot() if slot.monitor is not None else None,
        # a reference built from the stream must survive the restart with the windows
        # counted against it
        "profile": profile.to_dict() if profile is not None else None,
    }


def _share(capacity: int, spec: ModelSpec) -> int:
    """A version's label join's capacity: the model's versions share one join's bytes."""
    return max(1, capacity // max(spec.live_versions, 1))


def _typed(batch: EventBatch, profile: ReferenceProfile | None) -> EventBatch:
    """A batch decoded before its model had a schema, with columns typed as the profile's."""
    if profile is None or batch.numerical or not batch.categorical:
        return batch
    return typed_batch(batch, profile.specs)


def _add_capped(counted: Counter[str], extra: Mapping[str, int]) -> None:
    """Add ``extra`` to ``counted``; names past ``MAX_UNEXPECTED_NAMES`` and names longer
    than ``MAX_NAME_LENGTH`` go to ``OTHER_FEATURES``, so the label values exported stay
    bounded in number and in length."""
    for name, n in extra.items():
        if len(name) > MAX_NAME_LENGTH:
            counted[OTHER_FEATURES] += n
        elif name in counted or len(counted) < MAX_UNEXPECTED_NAMES:
            counted[name] += n
        else:
            counted[OTHER_FEATURES] += n
