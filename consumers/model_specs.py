"""What a configured model is made of: its reference, drift policy, performance
accumulators and the monitors built from them.

Shared by both stages of the service: stage 1 (per input partition) builds a
:class:`~monitor.model_state.ModelMonitor` per partition from a :class:`ModelSpec`; stage 2
(per model) evaluates merged windows with an evaluator of the same spec.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from consumers.reference_files import read_columns, read_profile
from monitor.binning import CategoricalBins
from monitor.config import ModelSettings
from monitor.evaluation import DriftPolicy, MethodChoice
from monitor.exceptions import ReferenceError
from monitor.kpis import Kpi, KpiSet
from monitor.labels import normalize_label, normalize_labels
from monitor.model_state import ModelMonitor, WindowSpec
from monitor.panes import CountLayout, PaneCounts
from monitor.performance import ExpectedPerformance, PerformanceAccumulator, accumulator_for
from monitor.reference import BinningOptions, ReferenceProfile, build_profile
from monitor.schema import FeatureKind, FeatureSpec
from monitor.segments import TAG_PREFIX, SegmentOptions
from monitor.stream_reference import StreamReference

__all__ = [
    "ModelSpec",
    "accumulators_of",
    "check_pane_bytes",
    "driftline_version",
    "kpis_of",
    "load_reference",
    "monitor_of",
    "options_of",
    "policy_of",
    "positive_label_of",
    "segment_options_of",
    "specs_of",
    "tags_of",
]

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
        FeatureSpec(name, FeatureKind(f.type), f.bounds) for name, f in settings.features.items()
    ]


def positive_label_of(settings: ModelSettings) -> object | None:
    """A binary classifier's positive label (default ``"1"``); ``None`` for other tasks."""
    if settings.task != "binary_classification":
        return None
    return settings.positive_label if settings.positive_label is not None else "1"


def options_of(settings: ModelSettings) -> BinningOptions:
    b = settings.binning
    return BinningOptions(b.quantiles, b.coarse_bins, b.max_categories)


def policy_of(settings: ModelSettings) -> DriftPolicy:
    d = settings.drift

    def fixed(threshold: float | str | None) -> float | None:
        return None if threshold is None or threshold == "auto" else float(threshold)

    def choice(m: Any) -> MethodChoice:
        return MethodChoice(m.method, fixed(m.threshold), tuple(m.report), m.min_effect)

    numerical, categorical = choice(d.numerical), choice(d.categorical)
    overrides = {}
    for name, o in d.overrides.items():
        kind = settings.features.get(name)
        base = categorical if kind is not None and kind.type == "categorical" else numerical
        method = o.method or base.method
        same = method == base.method
        overrides[name] = MethodChoice(
            method,
            fixed(o.threshold) if o.threshold is not None else (base.threshold if same else None),
            base.report,
            o.min_effect if o.min_effect is not None else (base.min_effect if same else None),
        )
    return DriftPolicy(
        numerical, categorical, d.min_events, overrides, d.false_alarm_rate, d.false_alert_interval
    )


def accumulators_of(
    settings: ModelSettings, profile: ReferenceProfile
) -> tuple[PerformanceAccumulator | None, ExpectedPerformance | None]:
    """Realized and estimated performance of a model's task.

    Binary classification compares labels with ``positive_label`` (default ``"1"``) and
    estimates through the reference's score calibration, when it has one; multiclass needs
    the classes, taken from the reference's predictions.
    """
    task = settings.task
    positive = positive_label_of(settings)
    if positive is not None:
        threshold = settings.decision_threshold
        return (
            accumulator_for(
                task,
                positive_label=positive,
                decision_threshold=threshold,
                negative_label=settings.negative_label,
            ),
            ExpectedPerformance(threshold, calibration=profile.score_calibration),
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
        if settings.segments and profile.segments is None:
            raise ReferenceError(
                f"{path}: the profile holds no segments but the model is sliced by "
                f"{', '.join(settings.segments)} (rebuild it with `driftline reference build "
                "--config`, or point reference.path at the reference data)"
            )
        return profile
    return profile_of_columns(settings, read_columns(path))


def profile_of_columns(settings: ModelSettings, columns: Mapping[str, Any]) -> ReferenceProfile:
    """The reference profile of a model built from reference data (not yet calibrated)."""
    prediction_kind = (
        FeatureKind.CATEGORICAL if settings.task == "multiclass_classification" else None
    )
    profile = build_profile(
        settings.name,
        columns,
        specs_of(settings),
        options_of(settings),
        prediction_kind=prediction_kind,
        positive_label=positive_label_of(settings),
    )
    cut = segment_options_of(settings)
    if cut is None:
        return profile
    return cut.apply(profile, {k: np.asarray(v) for k, v in columns.items()})


def tags_of(settings: ModelSettings) -> tuple[str, ...]:
    """The event tags a model's batches keep (without ``tags.``): those its segments and
    its KPIs read; the decoder drops the others."""
    fields = list(settings.segments)
    for k in settings.kpis.values():
        fields += k.expr.names if k.expr is not None else [k.field] if k.field else []
    return tuple(dict.fromkeys(f[len(TAG_PREFIX) :] for f in fields if f.startswith(TAG_PREFIX)))


def segment_options_of(settings: ModelSettings) -> SegmentOptions | None:
    """How the model is segmented; ``None`` without ``segments``."""
    if not settings.segments:
        return None
    s = settings.segmenting
    return SegmentOptions(
        tuple(settings.segments), s.top_k, s.reference == "slice", s.min_reference_events
    )


def monitor_of(
    settings: ModelSettings,
    profile: ReferenceProfile,
    windows: WindowSpec,
    policy: DriftPolicy | None = None,
) -> ModelMonitor:
    """The monitor of a model's windows binned against ``profile``."""
    performance, expected = accumulators_of(settings, profile)
    return ModelMonitor(
        profile,
        windows,
        policy or policy_of(settings),
        range_margin=settings.quality.range_margin,
        performance=performance,
        expected=expected,
        kpis=kpis_of(settings, profile),
    )


def check_pane_bytes(settings: ModelSettings, profile: ReferenceProfile) -> int:
    """Bytes of one pane of the model on ``profile`` (its counts, sums and accumulators,
    once for the model and once per segment); a :class:`ReferenceError` when that is over
    ``segmenting.max_pane_bytes``."""
    monitor = monitor_of(settings, profile, WindowSpec(60.0, 60.0, 0.0))
    size = PaneCounts.nbytes(monitor.pane_size, monitor.extra_size)
    cap = settings.segmenting.max_pane_bytes
    if size > cap:
        segments = monitor.blocks - 1
        raise ReferenceError(
            f"model {settings.name}: segments [{', '.join(settings.segments)}] with "
            f"segmenting.top_k {settings.segmenting.top_k} make {segments} segments, each one "
            f"more copy of the model's {monitor.layout.size:,} bins: a pane would take "
            f"{size:,} bytes, over segmenting.max_pane_bytes ({cap:,}); every pane of the "
            "window holds one, in every partition: slice by fewer fields, lower top_k or "
            "raise max_pane_bytes"
        )
    return size


def kpis_of(settings: ModelSettings, profile: ReferenceProfile) -> KpiSet | None:
    """The model's KPIs; a prediction is positive at ``decision_threshold`` (its score) or
    when its class is the positive label."""
    if not settings.kpis:
        return None
    positive = normalize_label(positive_label_of(settings) or "1")
    threshold = settings.decision_threshold

    def is_positive(score: NDArray[np.float64], label: NDArray[np.object_]) -> NDArray[np.bool_]:
        by_class = normalize_labels(label) == positive
        return np.where(np.isfinite(score), score >= threshold, by_class)

    def is_true(y_true: NDArray[np.object_]) -> NDArray[np.bool_]:
        return np.asarray(normalize_labels(y_true) == positive, dtype=bool)

    kpis = {
        name: Kpi(k.agg, k.field, k.q, k.where.get("prediction"), k.where.get("label"), k.expr)
        for name, k in settings.kpis.items()
    }
    try:
        return KpiSet.of(profile, kpis, is_positive, is_true)
    except ValueError as exc:
        raise ReferenceError(f"model {settings.name}: {exc}") from exc


class ModelSpec:
    """One configured model: settings, policy and its current reference.

    ``profile`` is ``None`` while a reference is still being collected from the stream.
    """

    def __init__(
        self, settings: ModelSettings, windows: WindowSpec, base_dir: Path | None = None
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.windows = windows
        self.policy = policy_of(settings)
        self.profile: ReferenceProfile | None = None
        self.fingerprint = ""
        self.stream_reference: StreamReference | None = None
        #: stream-built references of versions other than the model's own (the newest few)
        self.version_profiles: dict[str, ReferenceProfile] = {}
        self._evaluators: dict[str, ModelMonitor] = {}
        if settings.reference.path is not None:
            profile = load_reference(settings, base_dir)
            started = time.monotonic()
            check_pane_bytes(settings, profile)  # before the work below
            profile.calibrate()  # here, not in the first evaluation
            log.info(
                "drift thresholds calibrated",
                extra={"model": self.name, "seconds": round(time.monotonic() - started, 2)},
            )
            self.set_profile(profile)
        else:
            assert settings.reference.from_stream is not None
            self.stream_reference = StreamReference(
                settings.name,
                settings.reference.from_stream.events,
                specs_of(settings),
                options_of(settings),
                segment_options_of(settings),
                concurrent=max(settings.versions.live, 1),
                idle=self.retire_after,
            )

    @property
    def schema(self) -> tuple[FeatureSpec, ...] | list[FeatureSpec] | None:
        return self.profile.specs if self.profile is not None else specs_of(self.settings)

    def set_profile(self, profile: ReferenceProfile) -> None:
        self.profile = profile
        kpis = kpis_of(self.settings, profile)
        self.fingerprint = CountLayout(
            profile, self.settings.quality.range_margin, kpis.key if kpis is not None else ""
        ).fingerprint
        if positive_label_of(self.settings) is None or profile.prediction is None:
            return
        if profile.score_calibration is None:
            log.warning(
                "estimated performance from uncalibrated scores: %s",
                profile.uncalibrated_reason,
                extra={"model": self.name},
            )
        else:
            log.info(
                "estimated performance from calibrated scores",
                extra={"model": self.name, "reference_rows": profile.score_calibration.rows},
            )

    @property
    def live_versions(self) -> int:
        """How many versions may have windows of their own (below 2: none)."""
        return self.settings.versions.live

    @property
    def retire_after(self) -> float:
        """Wall-clock seconds without an event after which a version is retired."""
        after = self.settings.versions.retire_after
        if after is None:
            return self.windows.pane * self.windows.size_panes
        return max(after, self.windows.pane)  # a version between two panes stays live

    def version_profile(self, version: str) -> ReferenceProfile | None:
        """The reference a version's own window is judged by: the configured reference, or
        the version's own stream-built one (``None`` while it is being collected)."""
        if self.stream_reference is None:
            return self.profile
        if self.profile is not None and self.profile.model_version == version:
            return self.profile
        return self.version_profiles.get(version)

    def add_version_profile(self, profile: ReferenceProfile) -> None:
        """Keep a version's stream-built reference; the model's own stays as it is (a canary
        never replaces the reference of the version still serving)."""
        if profile.model_version is None:
            return
        self.version_profiles[profile.model_version] = profile
        if self.stream_reference is not None:
            self.stream_reference.profiled_versions.add(profile.model_version)
        while len(self.version_profiles) > max(self.live_versions, 1) + 1:
            old = next(iter(self.version_profiles))
            del self.version_profiles[old]
            # forgotten: a version rolled back to later gets a reference again
            ref, own = self.stream_reference, self.profile
            if ref is not None and own is not None and old != own.model_version:
                ref.profiled_versions.discard(old)

    def new_monitor(self, profile: ReferenceProfile | None = None) -> ModelMonitor:
        """A monitor of ``profile`` (default: the current reference)."""
        profile = profile or self.profile
        assert profile is not None
        return monitor_of(self.settings, profile, self.windows, self.policy)

    def evaluator(self, fingerprint: str, profile: Mapping[str, Any] | None) -> ModelMonitor | None:
        """A monitor that evaluates merged windows binned against ``fingerprint``: the
        configured reference, or a stream-built one carried by the panes."""
        ev = self._evaluators.get(fingerprint)
        if ev is not None:
            return ev
        if fingerprint == self.fingerprint and self.profile is not None:
            ev = self.new_monitor()
        elif profile is not None and self.stream_reference is not None:
            ev = self.new_monitor(ReferenceProfile.from_dict(profile))
            if ev.layout.fingerprint != fingerprint:
                return None
        else:
            return None
        # the model's reference and the live versions' own
        while len(self._evaluators) > self.live_versions + 1:
            del self._evaluators[next(iter(self._evaluators))]
        self._evaluators[fingerprint] = ev
        return ev
