"""The service: both stages wired together, and what is exported and served.

* **Stage 1** (:class:`~consumers.partitions.InputPartitions`): decoded batches of the input
  partitions this instance holds become panes and label joins; closed panes leave as
  :class:`~monitor.pane_merge.PaneUpdate` records.
* **Stage 2** (:class:`~consumers.model_owner.ModelOwner`): the models of the panes
  partitions this instance owns; their panes from every input partition are merged,
  evaluated, exported and alerted on here and nowhere else.

Between the two, :class:`~consumers.loop.ConsumerLoop` carries the updates through the
panes topic. Used on its own (tests, benchmarks), the service hands them straight from
stage 1 to stage 2 (``local=True``): the same merge either way, only the transport differs.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from alerts.formats import rfc3339
from consumers.alerting import Alerting, AlertUnit
from consumers.checkpoints import CheckpointStore, DirectoryStore, RestoreError
from consumers.decoding import BatchDecoder, DecodedBatch, GroundTruthBatch, GroundTruthDecoder
from consumers.exporter import DriftlineCollector, ModelCounters, StateSnapshot, evaluation_samples
from consumers.model_owner import ModelOwner
from consumers.model_specs import (
    ModelSpec,
    accumulators_of,
    driftline_version,
    load_reference,
    options_of,
    policy_of,
    specs_of,
    tags_of,
)
from consumers.partitions import InputPartitions
from monitor.config import DriftlineConfig
from monitor.evaluation import ModelEvaluation
from monitor.evaluation_history import MAX_BYTES, MAX_POINTS
from monitor.model_state import WindowSpec
from monitor.pane_merge import PaneUpdate
from monitor.schema import FeatureSpec

__all__ = [
    "CheckpointInfo",
    "RestoreError",
    "Service",
    "accumulators_of",
    "driftline_version",
    "load_reference",
    "options_of",
    "policy_of",
    "specs_of",
]

log = logging.getLogger("driftline.service")

#: the panes partition used when stage 1 hands updates straight to stage 2
LOCAL_UNIT = 0


@dataclass(frozen=True)
class CheckpointInfo:
    at: float  # wall-clock seconds
    duration: float
    size: int  # bytes, all partitions


class Service:
    """Stage 1 and stage 2 of one instance, behind one lock; a consistent snapshot for
    readers."""

    def __init__(
        self, config: DriftlineConfig, *, base_dir: Path | None = None, local: bool = True
    ) -> None:
        self.config = config
        self.version = driftline_version()
        w = config.windows
        self.windows = WindowSpec(w.pane, w.size, w.allowed_lateness, w.clock_skew)
        self.specs = {ms.name: ModelSpec(ms, self.windows, base_dir) for ms in config.models}
        #: hand stage-1 updates straight to stage 2 (no panes topic in between)
        self.local = local
        self._lock = threading.RLock()
        v = config.validation
        self.decoder = BatchDecoder(
            {name: spec.schema for name, spec in self.specs.items()},
            max_record_bytes=v.max_record_bytes,
            max_future=v.max_future,
            max_age=v.max_age,
            extra_features=v.extra_features,
            max_id_length=v.max_id_length,
            max_features=v.max_features,
            max_category_length=v.max_category_length,
            tags={name: tags_of(spec.settings) for name, spec in self.specs.items()},
        )
        self.ground_truth_decoder = GroundTruthDecoder(
            self.specs,
            max_record_bytes=v.max_record_bytes,
            max_future=v.max_future,
            max_age=v.max_age,
            max_id_length=v.max_id_length,
            max_label_length=v.max_label_length,
        )
        self.inputs = InputPartitions(self.specs, self._set_schema, v.max_id_length)
        self.owner = ModelOwner(
            self.specs, w.pane, self.windows.size_panes, w.idle_timeout, v.max_future
        )
        #: set when stage 2's consumer stopped on an error (reported by /readyz)
        self.stage2_error: str | None = None
        self.assigned = False
        self.kafka_connected = False
        self.consumer_lag: dict[tuple[str, int], int] = {}
        #: rules, sinks and retraining, when configured (see :meth:`enable_alerting`)
        self.alerting: Alerting | None = None
        self._alert_lock = threading.Lock()
        self._firing: dict[tuple[str, str, str], int] = {}
        self.checkpoint: CheckpointInfo | None = None
        self.restore_outcomes: Counter[str] = Counter()
        self.registry = CollectorRegistry()
        self.registry.register(DriftlineCollector(self.snapshot))

    def _set_schema(self, model: str, specs: Sequence[FeatureSpec]) -> None:
        self.decoder.set_schema(model, specs)

    # -- stage 1 ---------------------------------------------------------------------------

    def handle(
        self, decoded: DecodedBatch, now: float, partition: int = 0, version: int | None = None
    ) -> list[PaneUpdate]:
        """Count a decoded batch of one input partition; return the updates it produced
        (already merged when ``local``)."""
        with self._lock:
            updates = self.inputs.handle(decoded, now, partition, version)
        if self.local and updates:
            self.apply_panes(LOCAL_UNIT, updates, now)
        return updates

    def handle_ground_truth(
        self, batch: GroundTruthBatch, now: float, partition: int = 0, version: int | None = None
    ) -> None:
        """Join a partition's labels to their predictions and count them in their panes."""
        with self._lock:
            self.inputs.handle_ground_truth(batch, now, partition, version)
            updates = self.inputs.flush(partition) if self.local else []
        if updates:
            self.apply_panes(LOCAL_UNIT, updates, now)

    def flush(self, partition: int, now: float | None = None) -> list[PaneUpdate]:
        """Changed panes and the watermark of every model of an input partition."""
        with self._lock:
            return self.inputs.flush(partition, now)

    def partition_state(self, partition: int) -> dict[str, Any]:
        """Everything counted from an input partition, as plain data for a checkpoint."""
        with self._lock:
            return self.inputs.snapshot(partition)

    def restore_partition(self, partition: int, state: Mapping[str, Any], now: float) -> list[str]:
        """Replace an input partition's state with a checkpoint's (:class:`RestoreError`
        leaves it empty); return the models whose windows restart (another reference or
        binning than the checkpoint's)."""
        with self._lock:
            restarted = self.inputs.restore(partition, state, now)
            updates = self.inputs.flush(partition) if self.local else []
        if updates:
            self.apply_panes(LOCAL_UNIT, updates, now)
        return restarted

    def count_restore(self, outcome: str) -> None:
        """One more checkpoint restore with this outcome (restored, restored_older,
        reference_changed, rebuilt, none), for ``driftline_checkpoint_restore_total``."""
        with self._lock:
            self.restore_outcomes[outcome] += 1

    def drop_partition(self, partition: int, now: float) -> None:
        """Forget an input partition (it was handed to another instance)."""
        with self._lock:
            self.inputs.drop(partition)

    # -- stage 2 ---------------------------------------------------------------------------

    def apply_panes(self, unit: int, updates: Sequence[PaneUpdate], now: float) -> bool:
        """Merge a panes partition's updates; run its alerts. True when its alert state
        changed (the loop then checkpoints the unit at once)."""
        with self._lock:
            self.owner.apply(unit, updates, now)
        return self._run_alerts(unit, now)

    def tick(self, now: float) -> list[int]:
        """Advance idle watermarks; return the panes partitions whose alert state changed."""
        if self.local:  # stage 1's clocks move too (the loop does it with its heartbeats)
            with self._lock:
                updates = [u for p in self.inputs.partitions for u in self.inputs.flush(p, now)]
            if updates:
                self.apply_panes(LOCAL_UNIT, updates, now)
        with self._lock:
            self.owner.tick(now)
            units = sorted(self.owner.units)
        # rules with `for:` and retraining schedules move with time, not only with data
        return [u for u in units if self._run_alerts(u, now)]

    def evaluate_all(self, now: float) -> None:
        self.tick(now)

    def unit_state(self, unit: int) -> dict[str, Any]:
        with self._lock:
            state = self.owner.snapshot(unit)
            owned = self.owner.units.get(unit)
        with self._alert_lock:
            if owned is not None and isinstance(owned.alerts, AlertUnit):
                state["alerts"] = owned.alerts.snapshot()
        return state

    def restore_unit(self, unit: int, state: Mapping[str, Any], now: float) -> None:
        with self._lock:
            owned = self.owner.restore(unit, state, now)
        if self.alerting is not None:
            with self._alert_lock:
                owned.alerts = self.alerting.new_unit(now, state.get("alerts"))
                self._refresh_firing()

    def drop_unit(self, unit: int) -> None:
        with self._lock:
            self.owner.drop(unit)
        with self._alert_lock:
            self._refresh_firing()

    # -- alerts ------------------------------------------------------------------------------

    def enable_alerting(self, store: CheckpointStore | str | Path, now: float) -> None:
        """Evaluate the configured alert rules and retraining after each evaluation; the
        outbox lives in ``store`` (the configured state store; a path is a directory)."""
        if Alerting.wanted(self.config):
            if isinstance(store, str | Path):
                store = DirectoryStore(store)
            self.alerting = Alerting(self.config, store, now)

    def _run_alerts(self, unit: int, now: float) -> bool:
        if self.alerting is None:
            return False
        with self._lock:
            owned = self.owner.units.get(unit)
            if owned is None:
                return False
            evaluations = self.owner.evaluations(unit)
        versions = {
            name: spec.profile.model_version if spec.profile is not None else None
            for name, spec in self.specs.items()
        }
        with self._alert_lock:
            if not isinstance(owned.alerts, AlertUnit):
                owned.alerts = self.alerting.new_unit(now)
            changed = self.alerting.evaluate(
                owned.alerts, evaluation_samples(evaluations), versions, now, evaluations
            )
            self._refresh_firing()
        return changed

    def _refresh_firing(self) -> None:
        firing: dict[tuple[str, str, str], int] = {}
        for owned in list(self.owner.units.values()):
            if isinstance(owned.alerts, AlertUnit):
                for key, n in owned.alerts.engine.firing_counts().items():
                    firing[key] = firing.get(key, 0) + n
        self._firing = firing

    # -- reading ---------------------------------------------------------------------------

    @property
    def models(self) -> list[str]:
        return list(self.specs)

    def events_counted(self, model: str) -> int:
        """Valid prediction events of ``model`` counted in this instance's partitions."""
        with self._lock:
            return self.inputs.counters()[model].predictions

    def evaluation(self, model: str) -> ModelEvaluation | None:
        """The newest evaluation of ``model``, when this instance owns it."""
        with self._lock:
            return self.owner.evaluations().get(model)

    def snapshot(self) -> StateSnapshot:
        with self._lock:
            counters = {
                name: ModelCounters(
                    predictions=c.predictions,
                    ground_truth=c.ground_truth,
                    delay_buckets=tuple(c.delay_buckets.tolist()),
                    delay_sum=c.delay_sum,
                    unjoined=dict(c.unjoined),
                    labels_outside_window=c.labels_outside_window,
                    labels_unknown_class=c.labels_unknown_class,
                    late=c.late,
                    future=c.future,
                    latency_buckets=tuple(c.latency_buckets.tolist()),
                    latency_sum=c.latency_sum,
                )
                for name, c in self.inputs.counters().items()
            }
            evaluations = self.owner.evaluations()
            invalid = dict(self.inputs.invalid())
            restores = dict(self.restore_outcomes)
            unexpected = {
                (name, feature): n
                for name, counted in self.inputs.extra_features.items()
                for feature, n in counted.items()
            }
        # the dispatcher has its own lock (held across outbox fsyncs): not under ours
        deliveries = self.alerting.dispatcher.delivery_counts() if self.alerting else {}
        retraining = self.alerting.dispatcher.retraining_counts() if self.alerting else {}
        write_errors = self.alerting.dispatcher.write_errors() if self.alerting else 0
        return StateSnapshot(
            version=self.version,
            evaluations=evaluations,
            counters=counters,
            invalid=invalid,
            kafka_connected=self.kafka_connected,
            consumer_lag=dict(self.consumer_lag),
            checkpoint=self.checkpoint,
            alerts_firing=dict(self._firing),
            deliveries=deliveries,
            retraining=retraining,
            outbox_write_errors=write_errors,
            unexpected_features=unexpected,
            restores=restores,
        )

    def readiness(self) -> tuple[bool, list[str]]:
        reasons = []
        if not self.assigned:
            reasons.append("consumer has no partitions assigned")
        elif not self.kafka_connected:
            reasons.append("Kafka is not answering (broker down or stalled)")
        if self.stage2_error is not None:
            reasons.append(f"stage 2 (model evaluation) stopped: {self.stage2_error}")
        with self._lock:
            for name, spec in self.specs.items():
                if spec.profile is None:
                    ref = spec.stream_reference
                    got = ref.collected if ref else 0
                    want = ref.target if ref else 0
                    reasons.append(f"model {name}: reference not built yet ({got}/{want} events)")
        return (not reasons, reasons)

    def models_json(self) -> list[dict[str, Any]]:
        out = []
        with self._lock:
            counters = self.inputs.counters()
            evaluations = self.owner.evaluations()
            for name, spec in self.specs.items():
                ev = evaluations.get(name)
                out.append(
                    {
                        "model": name,
                        "task": spec.settings.task,
                        "reference": spec.profile is not None,
                        "evaluated_here": self.owner.unit_of(name) is not None,
                        "events_total": counters[name].predictions,
                        "window_events": ev.window_events if ev else None,
                        "drifted_features": list(ev.drifted_features) if ev else [],
                        "drifted_features_ratio": ev.drifted_features_ratio if ev else None,
                        "evaluated_at": rfc3339(ev.evaluated_at) if ev else None,
                    }
                )
        return out

    def model_json(self, model: str, history_since: float | None = None) -> dict[str, Any] | None:
        """The model's state, newest evaluation with its explanation, and recent evaluation
        points (with ``history_since``, only those of windows ending at or after it)."""
        with self._lock:
            spec = self.specs.get(model)
            if spec is None:
                return None
            c = self.inputs.counters()[model]
            ev = self.owner.evaluations().get(model)
            data: dict[str, Any] = {
                "model": model,
                "task": spec.settings.task,
                "evaluated_here": self.owner.unit_of(model) is not None,
                "events_total": c.predictions,
                "events_late_total": c.late,
                "events_future_total": c.future,
                # a shadow version's predictions for requests the model already answered
                "shadow_predictions_total": c.shadow,
                # counted, waiting for their panes to close (after allowed_lateness)
                "events_in_open_panes": c.open_events,
                "window_events": ev.window_events if ev else None,
                "partitions": self.inputs.partitions,
                "reference": None,
                "evaluation": None,
                "schema": {"unexpected_features": dict(self.inputs.extra_features[model])},
            }
            if spec.profile is not None:
                p = spec.profile
                data["reference"] = {
                    "events": p.n_events,
                    "model_version": p.model_version,
                    "features": {f.name: f.kind.value for f in p.features},
                }
            elif spec.stream_reference is not None:
                data["reference"] = {
                    "collecting": spec.stream_reference.collected,
                    "of": spec.stream_reference.target,
                }
            history = self.owner.history(model)
        if history_since is not None:
            history = [p for p in history if (p["window_end"] or -math.inf) >= history_since]
        # the explanation is computed outside the lock: the evaluation is immutable
        data["evaluation"] = _readable(ev.to_dict()) if ev else None
        data["history"] = history
        data["history_limit"] = {"points": MAX_POINTS, "bytes": MAX_BYTES}
        return data

    def alerts_json(self) -> list[dict[str, Any]]:
        if self.alerting is None:
            return []
        with self._alert_lock:
            alerts = [
                a.to_dict()
                for owned in list(self.owner.units.values())
                if isinstance(owned.alerts, AlertUnit)
                for a in owned.alerts.engine.active()
            ]
        return alerts


def _readable(evaluation: dict[str, Any]) -> dict[str, Any]:
    """Times a person reads in ISO 8601 (UTC): ``evaluated_at``, and the window's bounds
    beside their epoch seconds (``start_time``, ``end_time``)."""
    evaluation["evaluated_at"] = rfc3339(evaluation["evaluated_at"])
    w = evaluation["window"]
    w["start_time"] = rfc3339(w["start"]) if w["start"] is not None else None
    w["end_time"] = rfc3339(w["end"]) if w["end"] is not None else None
    return evaluation
