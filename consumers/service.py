"""The service: models, their references and monitors, decoding, and what is exported.

:class:`Service` owns the per-model state and everything the HTTP layer and the exporter
read. It is driven by :class:`~consumers.loop.ConsumerLoop` (or directly by tests) through
:meth:`Service.handle`, with the wall-clock passed in.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from consumers.decoding import BatchDecoder, DecodedBatch
from consumers.exporter import DriftlineCollector, ModelCounters, StateSnapshot
from consumers.reference_files import read_columns, read_profile
from monitor.config import DriftlineConfig, ModelSettings
from monitor.evaluation import DriftPolicy, MethodChoice, ModelEvaluation
from monitor.model_state import ModelMonitor, WindowSpec
from monitor.reference import BinningOptions, ReferenceProfile, build_profile
from monitor.schema import FeatureKind, FeatureSpec
from monitor.stream_reference import StreamReference

__all__ = ["Service", "driftline_version", "load_reference", "policy_of", "specs_of"]

log = logging.getLogger("driftline.service")


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
        FeatureSpec(name, FeatureKind(f.type), tuple(f.bounds) if f.bounds else None)
        for name, f in settings.features.items()
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


@dataclass
class _Model:
    settings: ModelSettings
    monitor: ModelMonitor | None = None
    stream_reference: StreamReference | None = None
    evaluation: ModelEvaluation | None = None
    predictions: int = 0  # valid events, including those taken for a stream reference
    extra_features: Counter[str] = field(default_factory=Counter)


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
            model = _Model(ms)
            if ms.reference.path is not None:
                profile = load_reference(ms, base_dir)
                model.monitor = ModelMonitor(profile, self.windows, policy_of(ms))
                schemas[ms.name] = profile.specs
            else:
                assert ms.reference.from_stream is not None
                model.stream_reference = StreamReference(
                    ms.name, ms.reference.from_stream.events, specs_of(ms), options_of(ms)
                )
                schemas[ms.name] = specs_of(ms)
            self._models[ms.name] = model
        self.decoder = BatchDecoder(schemas)
        self._invalid: Counter[tuple[str, str]] = Counter()
        self.assigned = False
        self.kafka_connected = False
        self.registry = CollectorRegistry()
        self.registry.register(DriftlineCollector(self.snapshot))

    # -- feeding ---------------------------------------------------------------------------

    def handle(self, decoded: DecodedBatch, now: float) -> list[str]:
        """Count a decoded batch; return the models whose window was re-evaluated."""
        evaluated = []
        with self._lock:
            for inv in decoded.invalid:
                self._invalid[(inv.model, inv.reason)] += 1
            for name, extra in decoded.extra_features.items():
                self._models[name].extra_features.update(extra)
            for name, batch in decoded.batches.items():
                model = self._models[name]
                model.predictions += len(batch)
                if model.stream_reference is not None:
                    batch = self._feed_stream_reference(model, batch)
                if model.monitor is not None and model.monitor.ingest(batch):
                    model.evaluation = model.monitor.evaluate(now)
                    evaluated.append(name)
        return evaluated

    def _feed_stream_reference(self, model: _Model, batch: Any) -> Any:
        ref = model.stream_reference
        assert ref is not None
        wanted = ref.wants(batch)
        if not wanted.any():
            return batch
        profile = ref.add(batch.select(wanted))
        if profile is not None:
            log.info(
                "reference for model %s version %s built from %d stream events",
                profile.model,
                profile.model_version,
                profile.n_events,
            )
            model.monitor = ModelMonitor(profile, self.windows, policy_of(model.settings))
            self.decoder.set_schema(profile.model, profile.specs)
        return batch.select(~wanted)

    def evaluate_all(self, now: float) -> None:
        with self._lock:
            for model in self._models.values():
                if model.monitor is not None:
                    model.evaluation = model.monitor.evaluate(now)

    def count_invalid(self, model: str, reason: str, n: int = 1) -> None:
        with self._lock:
            self._invalid[(model, reason)] += n

    # -- reading ---------------------------------------------------------------------------

    @property
    def models(self) -> list[str]:
        return list(self._models)

    def evaluation(self, model: str) -> ModelEvaluation | None:
        with self._lock:
            return self._models[model].evaluation

    def snapshot(self) -> StateSnapshot:
        with self._lock:
            counters = {}
            for name, m in self._models.items():
                mon = m.monitor
                counters[name] = ModelCounters(
                    predictions=m.predictions,
                    late=mon.late_total if mon else 0,
                    window_events=mon.window.window.events if mon else 0,
                    latency_buckets=tuple(mon.latency_buckets.tolist())
                    if mon
                    else ModelCounters().latency_buckets,
                    latency_sum=mon.latency_sum if mon else 0.0,
                )
            return StateSnapshot(
                version=self.version,
                evaluations={n: m.evaluation for n, m in self._models.items() if m.evaluation},
                counters=counters,
                invalid=dict(self._invalid),
                kafka_connected=self.kafka_connected,
            )

    def readiness(self) -> tuple[bool, list[str]]:
        reasons = []
        if not self.assigned:
            reasons.append("consumer has no partitions assigned")
        with self._lock:
            for name, m in self._models.items():
                if m.monitor is None:
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
                        "reference": m.monitor is not None,
                        "events_total": m.predictions,
                        "window_events": m.monitor.window.window.events if m.monitor else 0,
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
                "events_late_total": m.monitor.late_total if m.monitor else 0,
                "reference": None,
                "evaluation": m.evaluation.to_dict() if m.evaluation else None,
                "schema": {"unexpected_features": dict(m.extra_features)},
            }
            if m.monitor is not None:
                p = m.monitor.profile
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
        return []
