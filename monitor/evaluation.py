"""Evaluation snapshots: what a window said about a model, as plain immutable data.

The exporter and the HTTP API read the newest snapshot; nothing in it is mutated after
it is built, so it can be handed between threads as is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from monitor.drift import DEFAULT_MIN_EFFECT, DriftScore
from monitor.explain import explain, verdict_rule
from monitor.reference import FeatureProfile
from monitor.repeated import alpha_for_runs

__all__ = ["DriftPolicy", "FeatureEvaluation", "MethodChoice", "ModelEvaluation"]


@dataclass(frozen=True)
class MethodChoice:
    """The method that decides drift, its threshold, and the methods reported beside it.

    ``threshold`` ``None`` is "auto": calibrated per window (see :mod:`monitor.null_model`);
    a number keeps its fixed meaning. ``min_effect`` ``None`` is the method's default.
    """

    method: str
    threshold: float | None = None
    report: tuple[str, ...] = ()
    min_effect: float | None = None

    @property
    def methods(self) -> tuple[str, ...]:
        return (self.method, *(m for m in self.report if m != self.method))

    @property
    def effect(self) -> float:
        """The smallest deciding score that counts as drift."""
        if self.min_effect is not None:
            return self.min_effect
        return DEFAULT_MIN_EFFECT.get(self.method, 0.0)


@dataclass(frozen=True)
class DriftPolicy:
    """How a model's features are judged (the documented defaults).

    ``false_alarm_rate`` is the model's budget: with stationary traffic, an evaluation
    flags any feature with at most this probability. It is split evenly across the
    features (Bonferroni), so each calibrated feature is judged at
    ``false_alarm_rate / features``.

    ``false_alert_interval`` (seconds; ``None``: no such bound) is the expected time
    between false alerts the model should give on a sliding window evaluated once a
    pane: each feature is judged at an ``alpha`` low enough that runs of flagged
    evaluations start no more often than once per ``false_alert_interval`` across the
    model's features (see :mod:`monitor.repeated`), when that is lower than its share of
    ``false_alarm_rate``.
    """

    numerical: MethodChoice = MethodChoice("wasserstein", None, ("psi", "ks"))
    categorical: MethodChoice = MethodChoice("jensenshannon", None, ("psi", "chisquare"))
    min_events: int = 100
    overrides: Mapping[str, MethodChoice] = field(default_factory=dict)
    false_alarm_rate: float = 0.01
    false_alert_interval: float | None = 7 * 86400.0

    def for_feature(self, name: str, numerical: bool) -> MethodChoice:
        return self.overrides.get(name) or (self.numerical if numerical else self.categorical)

    def feature_alpha(
        self, features: int, pane: float | None = None, window_panes: int = 1
    ) -> float:
        """The false-alarm rate each of ``features`` features is judged at, on a window of
        ``window_panes`` panes of ``pane`` seconds evaluated once a pane (without
        ``pane``: per evaluation only)."""
        share = self.false_alarm_rate / max(features, 1)
        if pane is None or self.false_alert_interval is None:
            return share
        runs = pane / (self.false_alert_interval * max(features, 1))
        # runs start no more often than flagged evaluations, nor more than once in 4 evaluations
        if runs >= min(share, 0.25):
            return share
        return min(share, alpha_for_runs(runs, window_panes))


@dataclass(frozen=True)
class FeatureEvaluation:
    name: str
    kind: str
    method: str
    #: the threshold applied to this window (calibrated for its ``events`` when auto;
    #: NaN when the window has none of the feature's values)
    threshold: float
    scores: tuple[DriftScore, ...]
    drifted: bool | None  # None: fewer than min_events values of this feature in the window
    events: int
    missing_ratio: float
    type_mismatch_ratio: float
    nonfinite_ratio: float
    out_of_range_ratio: float
    new_category_ratio: float
    min_effect: float = 0.0
    #: how the threshold was set: "calibrated", "fixed" or "alpha" (a test's p-value)
    threshold_kind: str = "fixed"
    #: the fewest values of the feature a window needs for a verdict
    min_events: int = 0
    #: the reference and the window's value-bin counts and sums, which the explanation of
    #: the verdict reads (see :mod:`monitor.explain`); not part of equality
    profile: FeatureProfile | None = field(default=None, compare=False, repr=False)
    window_counts: NDArray[np.int64] | None = field(default=None, compare=False, repr=False)
    window_sums: NDArray[np.float64] | None = field(default=None, compare=False, repr=False)
    #: the explanation, computed once (readers poll the same evaluation many times)
    _why: dict[str, Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    @property
    def decision(self) -> DriftScore | None:
        for s in self.scores:
            if s.method == self.method:
                return s
        return None

    @property
    def rule(self) -> str:
        """The rule that settled the verdict (see :func:`monitor.explain.verdict_rule`)."""
        return verdict_rule(
            self.decision,
            self.drifted,
            self.threshold,
            self.min_effect,
            self.events,
            self.min_events,
        )

    def verdict(self) -> dict[str, Any]:
        """The verdict with the threshold and the rule that decided it."""
        return {
            "drifted": self.drifted,
            "rule": self.rule,
            "threshold": self.threshold,
            "threshold_kind": self.threshold_kind,
            "compared": "pvalue" if self.threshold_kind == "alpha" else "score",
            "min_effect": self.min_effect,
            "min_events": self.min_events,
            "values": self.events,
        }

    def why(self, top: int | None = None) -> dict[str, Any] | None:
        """Reference vs window summaries and the bins that moved the score most (with
        every chart bin, unless ``top`` limits the output to the top bins); None for an
        evaluation built without its counts."""
        if self.profile is None or self.window_counts is None or self.window_sums is None:
            return None
        if not self._why:
            self._why.update(
                explain(self.profile, self.method, self.window_counts, self.window_sums)
            )
        out = dict(self._why)
        if top is not None:
            del out["bins"]
            out["top_bins"] = out["top_bins"][:top]
        return out

    def to_dict(self) -> dict[str, Any]:
        decision = self.decision
        return {
            "name": self.name,
            "type": self.kind,
            "method": self.method,
            "threshold": self.threshold,
            "threshold_kind": self.threshold_kind,
            "min_effect": self.min_effect,
            "score": decision.score if decision else None,
            "pvalue": decision.pvalue if decision else None,
            "drifted": self.drifted,
            "scores": {s.method: {"score": s.score, "pvalue": s.pvalue} for s in self.scores},
            "verdict": self.verdict(),
            "why": self.why(),
            "quality": {
                "missing_ratio": self.missing_ratio,
                "type_mismatch_ratio": self.type_mismatch_ratio,
                "nonfinite_ratio": self.nonfinite_ratio,
                "out_of_range_ratio": self.out_of_range_ratio,
                "new_category_ratio": self.new_category_ratio,
            },
        }


@dataclass(frozen=True)
class ModelEvaluation:
    model: str
    evaluated_at: float  # wall-clock seconds, passed in
    watermark: float
    window_start: float | None
    window_end: float | None
    window_events: int
    min_events: int
    features: tuple[FeatureEvaluation, ...]
    prediction: tuple[DriftScore, ...] = ()
    #: realized metrics on the labels joined to the window's predictions
    performance: Mapping[str, float] = field(default_factory=dict)
    #: confidence-based estimates over all the window's predictions
    estimated: Mapping[str, float] = field(default_factory=dict)
    #: whether ``estimated`` read the scores through the reference's calibration (``None``
    #: without estimates)
    estimated_calibrated: bool | None = None
    label_coverage: float | None = None
    labelled_events: int = 0
    #: ``field=value`` of the segment this evaluates, ``None`` for the whole model
    segment: str | None = None
    #: the evaluation of each segment of the window, by segment
    segments: Mapping[str, ModelEvaluation] = field(default_factory=dict)
    #: a segment's share of the reference rows
    reference_share: float | None = None
    #: the model's business KPIs on the window, by name
    kpis: Mapping[str, float] = field(default_factory=dict)
    #: per segment field: drift of the window's traffic mix across its segments
    segment_mix: Mapping[str, DriftScore] = field(default_factory=dict)
    #: the model version this evaluates, ``None`` for the model as served (every version)
    model_version: str | None = None
    #: the evaluation of each live version with a window of its own, by version
    versions: Mapping[str, ModelEvaluation] = field(default_factory=dict)
    #: the version serving the model (the champion): of ``versions``, the one with the
    #: most events in its window; on a tie (a shadow answers as many), the first by name
    serving_version: str | None = None

    @property
    def drifted_features_ratio(self) -> float | None:
        verdicts = [f.drifted for f in self.features if f.drifted is not None]
        if not verdicts:
            return None
        return sum(verdicts) / len(verdicts)

    @property
    def drifted_features(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if f.drifted)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "evaluated_at": self.evaluated_at,
            "watermark": self.watermark,
            "window": {
                "start": self.window_start,
                "end": self.window_end,
                "events": self.window_events,
                "min_events": self.min_events,
            },
            "drifted_features_ratio": self.drifted_features_ratio,
            "drifted_features": list(self.drifted_features),
            "features": [f.to_dict() for f in self.features],
            "prediction_drift": {
                s.method: {"score": s.score, "pvalue": s.pvalue} for s in self.prediction
            },
            "performance": {
                "realized": dict(self.performance),
                "estimated": dict(self.estimated),
                "estimated_calibrated": self.estimated_calibrated,
                "label_coverage": self.label_coverage,
                "labelled_events": self.labelled_events,
            },
            **({"kpis": dict(self.kpis)} if self.kpis else {}),
            **(
                {
                    "segments": {name: ev.to_dict() for name, ev in self.segments.items()},
                    "segment_mix": {
                        name: {"method": s.method, "score": s.score}
                        for name, s in self.segment_mix.items()
                    },
                }
                if self.segments
                else {}
            ),
            **(
                {"segment": self.segment, "reference_share": self.reference_share}
                if self.segment is not None
                else {}
            ),
            **({"model_version": self.model_version} if self.model_version is not None else {}),
            **(
                {
                    "versions": {v: ev.to_dict() for v, ev in self.versions.items()},
                    "serving_version": self.serving_version,
                }
                if self.versions
                else {}
            ),
        }
