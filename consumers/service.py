"""The service: models, their references and monitors, decoding, and what is exported.

:class:`Service` owns the per-model state and everything the HTTP layer and the exporter
read. It is driven by :class:`~consumers.loop.ConsumerLoop` (or directly by tests) through
:meth:`Service.handle`, with the wall-clock passed in.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry

from consumers.alerting import Alerting
from consumers.decoding import BatchDecoder, DecodedBatch, GroundTruthBatch, GroundTruthDecoder
from consumers.exporter import DriftlineCollector, ModelCounters, StateSnapshot
from consumers.reference_files import read_columns, read_profile
from monitor.binning import CategoricalBins
from monitor.config import DriftlineConfig, ModelSettings
from monitor.evaluation import DriftPolicy, MethodChoice, ModelEvaluation
from monitor.events import EventBatch
from monitor.label_join import LabelJoin
from monitor.model_state import DELAY_BUCKETS, LATENCY_BUCKETS, ModelMonitor, WindowSpec
from monitor.performance import ExpectedPerformance, PerformanceAccumulator, accumulator_for
from monitor.reference import BinningOptions, ReferenceProfile, build_profile
from monitor.schema import FeatureKind, FeatureSpec
from monitor.stream_reference import StreamReference, typed_batch

__all__ = [
    "CheckpointInfo",
    "Service",
    "driftline_version",
    "load_reference",
    "policy_of",
    "specs_of",
]

log = logging.getLogger("driftline.service")

#: Distinct unexpected feature names kept per model; the rest are counted together, so a
#: producer sending random keys cannot blow up the metric's cardinality.
MAX_UNEXPECTED_NAMES = 50
OTHER_FEATURES = "__other__"


def driftline_version() -> str:
    try:
        return dist_version("driftline")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


def specs_of(settings: ModelSettings) -> list[FeatureSpec] | None:
    """Configured features, or ``None`` when they are to be inferred from the reference."""
    if not settings.features:
        return None
    return [
        FeatureSpec(name, FeatureKind(f.type), f.bounds) for name, f in settings.features.items()
    ]


def options_of(settings: ModelSettings) -> BinningOptions:
    b = settings.binning
    return BinningOptions(b.quantiles, b.coarse_bins, b.max_categories)


def policy_of(settings: ModelSettings) -> DriftPolicy:
    d = settings.drift

    def choice(m: Any) -> MethodChoice:
        return MethodChoice(m.method, m.threshold, tuple(m.report))

    numerical, categorical = choice(d.numerical), choice(d.categorical)
    overrides = {}
    for name, o in d.overrides.items():
        kind = settings.features.get(name)
        base = categorical if kind is not None and kind.type == "categorical" else numerical
        overrides[name] = MethodChoice(
            o.method or base.method,
            o.threshold if o.threshold is not None else base.threshold,
            base.report,
        )
    return DriftPolicy(numerical, categorical, d.min_events, overrides)


def _typed(batch: EventBatch, profile: ReferenceProfile | None) -> EventBatch:
    """A batch decoded before its model had a schema, with columns typed as the profile's."""
    if profile is None or batch.numerical or not batch.categorical:
        return batch
    return typed_batch(batch, profile.specs)


def accumulators_of(
    settings: ModelSettings, profile: ReferenceProfile
) -> tuple[PerformanceAccumulator | None, ExpectedPerformance | None]:
    """Realized and estimated performance of a model's task.

    Binary classification compares labels with ``positive_label`` (default ``"1"``);
    multiclass needs the classes, taken from the reference's predictions.
    """
    task = settings.task
    if task == "binary_classification":
        positive = settings.positive_label if settings.positive_label is not None else "1"
        threshold = settings.decision_threshold
        return (
            accumulator_for(task, positive_label=positive, decision_threshold=threshold),
            ExpectedPerformance(threshold),
        )
    if task == "regression":
        return accumulator_for(task, positive_label=None), None
    pred = profile.prediction
    if pred is not None and isinstance(pred.bins, CategoricalBins):
        return accumulator_for(task, positive_label=None, classes=pred.bins.categories), None
    log.warning("model %s: no reference predictions to take classes from", settings.name)
    return None, None


def load_reference(settings: ModelSettings, base_dir: Path | None = None) -> ReferenceProfile:
    """The reference profile of a model configured with ``reference.path``."""
    assert settings.reference.path is not None
    path = Path(settings.reference.path)
    if base_dir is not None and not path.is_absolute():
        path = base_dir / path
    if path.suffix.lower() == ".json":
        profile = read_profile(path)
        if profile.model != settings.name:
            log.warning("profile %s was built for model %r", path, profile.model)
        return profile
    columns = read_columns(path)
    prediction_kind = (
        FeatureKind.CATEGORICAL if settings.task == "multiclass_classification" else None
    )
    return build_profile(
        settings.name,
        columns,
        specs_of(settings),
        options_of(settings),
        prediction_kind=prediction_kind,
    )


@dataclass(frozen=True)
class CheckpointInfo:
    at: float  # wall-clock seconds
    duration: float
    size: int  # bytes, all partitions


@dataclass
class _Model:
    """One configured model: its reference and one monitor per input partition.

    Partitions keep separate windows so that a partition can be handed to another
    instance with exactly its own state; evaluation adds the windows up.
    """

    settings: ModelSettings
    policy: DriftPolicy
    profile: ReferenceProfile | None = None
    stream_reference: StreamReference | None = None
    monitors: dict[int, ModelMonitor] = field(default_factory=dict)
    evaluation: ModelEvaluation | None = None
    #: valid events per partition, including those taken for a stream reference
    partition_predictions: Counter[int] = field(default_factory=Counter)
    partition_ground_truth: Counter[int] = field(default_factory=Counter)
    joins: dict[int, LabelJoin] = field(default_factory=dict)

    def join(self, partition: int) -> LabelJoin:
        j = self.joins.get(partition)
        if j is None:
            labels = self.settings.labels
            j = self.joins[partition] = LabelJoin(ttl=labels.ttl, capacity=labels.capacity)
        return j

    extra_features: Counter[str] = field(default_factory=Counter)

    def count_extra(self, extra: Counter[str]) -> None:
        """Count unexpected features; names past the first few share one label value."""
        for name, n in extra.items():
            if name in self.extra_features or len(self.extra_features) < MAX_UNEXPECTED_NAMES:
                self.extra_features[name] += n
            else:
                self.extra_features[OTHER_FEATURES] += n

    def monitor(self, partition: int, windows: WindowSpec) -> ModelMonitor | None:
        if self.profile is None:
            return None
        m = self.monitors.get(partition)
        if m is None:
            performance, expected = accumulators_of(self.settings, self.profile)
            m = self.monitors[partition] = ModelMonitor(
                self.profile,
                windows,
                self.policy,
                range_margin=self.settings.quality.range_margin,
                performance=performance,
                expected=expected,
            )
        return m

    def evaluate(self, now: float) -> None:
        if self.monitors:
            monitors = [self.monitors[p] for p in sorted(self.monitors)]
            self.evaluation = ModelMonitor.evaluate_merged(monitors, now)

    @property
    def predictions(self) -> int:
        return sum(self.partition_predictions.values())

    @property
    def late(self) -> int:
        return sum(m.late_total for m in self.monitors.values())

    @property
    def window_events(self) -> int:
        return sum(m.window.window.events for m in self.monitors.values())


class Service:
    """Per-model monitors fed with decoded batches; a consistent snapshot for readers."""

    def __init__(self, config: DriftlineConfig, *, base_dir: Path | None = None) -> None:
        self.config = config
        self.version = driftline_version()
        self.windows = WindowSpec(
            config.windows.pane, config.windows.size, config.windows.allowed_lateness
        )
        self._lock = threading.RLock()
        self._models: dict[str, _Model] = {}
        schemas: dict[str, Sequence[FeatureSpec] | None] = {}
        for ms in config.models:
            model = _Model(ms, policy_of(ms))
            if ms.reference.path is not None:
                model.profile = load_reference(ms, base_dir)
                schemas[ms.name] = model.profile.specs
            else:
                assert ms.reference.from_stream is not None
                model.stream_reference = StreamReference(
                    ms.name, ms.reference.from_stream.events, specs_of(ms), options_of(ms)
                )
                schemas[ms.name] = specs_of(ms)
            self._models[ms.name] = model
        v = config.validation
        self.decoder = BatchDecoder(
            schemas,
            max_record_bytes=v.max_record_bytes,
            max_future=v.max_future,
            max_age=v.max_age,
            extra_features=v.extra_features,
        )
        #: dead-lettered records per partition, by (model, reason)
        self._invalid: dict[int, Counter[tuple[str, str]]] = {}
        self.ground_truth_decoder = GroundTruthDecoder(
            self._models, max_record_bytes=v.max_record_bytes
        )
        self.assigned = False
        self.kafka_connected = False
        self.consumer_lag: dict[tuple[str, int], int] = {}
        #: rules, sinks and retraining, when configured (see :meth:`enable_alerting`)
        self.alerting: Alerting | None = None
        self.checkpoint: CheckpointInfo | None = None
        self.registry = CollectorRegistry()
        self.registry.register(DriftlineCollector(self.snapshot))

    # -- feeding ---------------------------------------------------------------------------

    def handle(self, decoded: DecodedBatch, now: float, partition: int = 0) -> list[str]:
        """Count a decoded batch of one partition; return the models re-evaluated."""
        evaluated = []
        with self._lock:
            invalid = self._invalid.setdefault(partition, Counter())
            for inv in decoded.invalid:
                invalid[(inv.model, inv.reason)] += 1
            for name, extra in decoded.extra_features.items():
                self._models[name].count_extra(extra)
            for name, batch in decoded.batches.items():
                model = self._models[name]
                model.partition_predictions[partition] += len(batch)
                if model.stream_reference is not None:
                    batch = self._feed_stream_reference(model, batch)
                monitor = model.monitor(partition, self.windows)
                if monitor is None:
                    continue
                moved = monitor.ingest(batch)
                joined = model.join(partition).add_predictions(
                    batch.event_id,
                    batch.event_time,
                    batch.score,
                    batch.label,
                    batch.model_version,
                    now,
                )
                if len(joined):
                    monitor.add_joined(joined)
                if moved or len(joined):
                    model.evaluate(now)
                    evaluated.append(name)
            if evaluated:
                self._run_alerts(now)
        return evaluated

    def handle_ground_truth(self, batch: GroundTruthBatch, now: float, partition: int = 0) -> None:
        """Join a partition's labels to their predictions and count them in their panes."""
        with self._lock:
            invalid = self._invalid.setdefault(partition, Counter())
            for inv in batch.invalid:
                invalid[(inv.model, inv.reason)] += 1
            for name, (ids, y_true, times) in batch.labels.items():
                model = self._models[name]
                model.partition_ground_truth[partition] += len(ids)
                joined = model.join(partition).add_labels(ids, y_true, times, now)
                monitor = model.monitors.get(partition)
                if len(joined) and monitor is not None:
                    monitor.add_joined(joined)
                    model.evaluate(now)
                    self._run_alerts(now)

    def _feed_stream_reference(self, model: _Model, batch: EventBatch) -> EventBatch:
        ref = model.stream_reference
        assert ref is not None
        wanted = ref.wants(batch)
        if not wanted.any():
            return _typed(batch, model.profile)
        # only as many as the reference still needs; the rest of the batch is windowed
        taken = np.zeros(len(batch), dtype=bool)
        taken[np.flatnonzero(wanted)[: ref.target - ref.collected]] = True
        profile = ref.add(batch.select(taken))
        if profile is not None:
            log.info(
                "reference built from the stream",
                extra={
                    "model": profile.model,
                    "model_version": profile.model_version,
                    "events": profile.n_events,
                },
            )
            # A new reference means new bins: windows counted against the old one restart.
            model.profile, model.monitors, model.evaluation = profile, {}, None
            self.decoder.set_schema(profile.model, profile.specs)
        return _typed(batch.select(~taken), model.profile)

    def evaluate_all(self, now: float) -> None:
        with self._lock:
            for model in self._models.values():
                model.evaluate(now)

    # -- alerts ------------------------------------------------------------------------------

    def enable_alerting(self, state_dir: str | Path, now: float) -> None:
        """Evaluate the configured alert rules and retraining after each evaluation; their
        state and outbox live in ``state_dir``."""
        if Alerting.wanted(self.config):
            self.alerting = Alerting(self.config, state_dir, now)

    def _run_alerts(self, now: float) -> None:
        if self.alerting is None:
            return
        samples = [
            (s.name, s.labels, float(s.value))
            for family in self.registry.collect()
            for s in family.samples
        ]
        versions = {
            name: m.profile.model_version if m.profile is not None else None
            for name, m in self._models.items()
        }
        self.alerting.evaluate(samples, versions, now)

    # -- partitions and checkpoints --------------------------------------------------------

    def partition_state(self, partition: int) -> dict[str, Any]:
        """Everything counted from ``partition``, as plain data for a checkpoint."""
        with self._lock:
            models: dict[str, Any] = {}
            for name, m in self._models.items():
                monitor = m.monitors.get(partition)
                join = m.joins.get(partition)
                models[name] = {
                    "predictions": m.partition_predictions.get(partition, 0),
                    "ground_truth": m.partition_ground_truth.get(partition, 0),
                    "join": join.snapshot() if join is not None else None,
                    "monitor": monitor.snapshot() if monitor is not None else None,
                    # a reference built from the stream must survive the restart with the
                    # windows counted against it
                    "profile": m.profile.to_dict()
                    if m.profile is not None and m.stream_reference is not None
                    else None,
                }
            invalid = self._invalid.get(partition, Counter())
            return {
                "models": models,
                "invalid": [[model, reason, n] for (model, reason), n in sorted(invalid.items())],
            }

    def restore_partition(self, partition: int, state: Mapping[str, Any], now: float) -> None:
        """Replace ``partition``'s counts with a checkpoint's."""
        with self._lock:
            for name, data in state["models"].items():
                m = self._models.get(name)
                if m is None:
                    log.warning("checkpoint has unknown model %s; ignored", name)
                    continue
                if data.get("profile") is not None and m.stream_reference is not None:
                    profile = ReferenceProfile.from_dict(data["profile"])
                    if m.profile is None or m.profile.to_dict() != profile.to_dict():
                        m.profile, m.monitors = profile, {}
                        m.stream_reference.profiled_versions.add(profile.model_version)
                        self.decoder.set_schema(name, profile.specs)
                m.partition_predictions[partition] = int(data["predictions"])
                m.partition_ground_truth[partition] = int(data.get("ground_truth", 0))
                if data.get("join") is not None:
                    m.joins[partition] = LabelJoin.restore(data["join"])
                else:
                    m.joins.pop(partition, None)
                m.monitors.pop(partition, None)
                if data["monitor"] is not None:
                    monitor = m.monitor(partition, self.windows)
                    if monitor is None:
                        log.warning("checkpoint of %s has windows but no reference", name)
                        continue
                    monitor.restore(data["monitor"])
                m.evaluate(now)
            self._invalid[partition] = Counter(
                {(model, reason): int(n) for model, reason, n in state["invalid"]}
            )

    def drop_partition(self, partition: int, now: float) -> None:
        """Forget ``partition`` (it was handed to another instance)."""
        with self._lock:
            for m in self._models.values():
                m.monitors.pop(partition, None)
                m.joins.pop(partition, None)
                m.partition_predictions.pop(partition, None)
                m.partition_ground_truth.pop(partition, None)
                if m.monitors:
                    m.evaluate(now)
                else:
                    m.evaluation = None
            self._invalid.pop(partition, None)

    # -- reading ---------------------------------------------------------------------------

    @property
    def models(self) -> list[str]:
        return list(self._models)

    def events_counted(self, model: str) -> int:
        """Valid prediction events of ``model`` counted in this instance's partitions."""
        with self._lock:
            return self._models[model].predictions

    def evaluation(self, model: str) -> ModelEvaluation | None:
        with self._lock:
            return self._models[model].evaluation

    def snapshot(self) -> StateSnapshot:
        with self._lock:
            counters = {}
            for name, m in self._models.items():
                buckets = np.zeros(len(LATENCY_BUCKETS) + 1, dtype=np.int64)
                for mon in m.monitors.values():
                    buckets += mon.latency_buckets
                delay = np.zeros(len(DELAY_BUCKETS) + 1, dtype=np.int64)
                for mon in m.monitors.values():
                    delay += mon.delay_buckets
                unjoined: Counter[str] = Counter()
                for j in m.joins.values():
                    unjoined.update(j.dropped)
                counters[name] = ModelCounters(
                    predictions=m.predictions,
                    ground_truth=sum(m.partition_ground_truth.values()),
                    delay_buckets=tuple(delay.tolist()),
                    delay_sum=sum(mon.delay_sum for mon in m.monitors.values()),
                    unjoined=dict(unjoined),
                    labels_outside_window=sum(
                        mon.labels_outside_window for mon in m.monitors.values()
                    ),
                    late=m.late,
                    window_events=m.window_events,
                    latency_buckets=tuple(buckets.tolist()),
                    latency_sum=sum(mon.latency_sum for mon in m.monitors.values()),
                )
            return StateSnapshot(
                version=self.version,
                evaluations={n: m.evaluation for n, m in self._models.items() if m.evaluation},
                counters=counters,
                invalid=dict(sum(self._invalid.values(), Counter())),
                kafka_connected=self.kafka_connected,
                consumer_lag=dict(self.consumer_lag),
                checkpoint=self.checkpoint,
                alerts_firing=self.alerting.engine.firing_counts() if self.alerting else {},
                deliveries=self.alerting.dispatcher.delivery_counts() if self.alerting else {},
                retraining=self.alerting.dispatcher.retraining_counts() if self.alerting else {},
                unexpected_features={
                    (name, feature): n
                    for name, m in self._models.items()
                    for feature, n in m.extra_features.items()
                },
            )

    def readiness(self) -> tuple[bool, list[str]]:
        reasons = []
        if not self.assigned:
            reasons.append("consumer has no partitions assigned")
        elif not self.kafka_connected:
            reasons.append("Kafka is not answering (broker down or stalled)")
        with self._lock:
            for name, m in self._models.items():
                if m.profile is None:
                    ref = m.stream_reference
                    got = ref.collected if ref else 0
                    want = ref.target if ref else 0
                    reasons.append(f"model {name}: reference not built yet ({got}/{want} events)")
        return (not reasons, reasons)

    def models_json(self) -> list[dict[str, Any]]:
        out = []
        with self._lock:
            for name, m in self._models.items():
                ev = m.evaluation
                out.append(
                    {
                        "model": name,
                        "task": m.settings.task,
                        "reference": m.profile is not None,
                        "events_total": m.predictions,
                        "window_events": m.window_events,
                        "drifted_features": list(ev.drifted_features) if ev else [],
                        "drifted_features_ratio": ev.drifted_features_ratio if ev else None,
                        "evaluated_at": ev.evaluated_at if ev else None,
                    }
                )
        return out

    def model_json(self, model: str) -> dict[str, Any] | None:
        with self._lock:
            m = self._models.get(model)
            if m is None:
                return None
            data: dict[str, Any] = {
                "model": model,
                "task": m.settings.task,
                "events_total": m.predictions,
                "events_late_total": m.late,
                "window_events": m.window_events,
                "partitions": sorted(m.monitors),
                "reference": None,
                "evaluation": m.evaluation.to_dict() if m.evaluation else None,
                "schema": {"unexpected_features": dict(m.extra_features)},
            }
            if m.profile is not None:
                p = m.profile
                data["reference"] = {
                    "events": p.n_events,
                    "model_version": p.model_version,
                    "features": {f.name: f.kind.value for f in p.features},
                }
            elif m.stream_reference is not None:
                data["reference"] = {
                    "collecting": m.stream_reference.collected,
                    "of": m.stream_reference.target,
                }
            return data

    def alerts_json(self) -> list[dict[str, Any]]:
        if self.alerting is None:
            return []
        with self._lock:
            return [a.to_dict() for a in self.alerting.engine.active()]
