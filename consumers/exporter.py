"""Prometheus export: a Collector that reads the newest state snapshot at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from monitor.evaluation import ModelEvaluation
from monitor.model_state import DELAY_BUCKETS, LATENCY_BUCKETS

__all__ = ["DriftlineCollector", "ModelCounters", "StateSnapshot", "evaluation_samples"]


@dataclass(frozen=True)
class ModelCounters:
    """Cumulative counters of one model since the service started (or was restored)."""

    predictions: int = 0
    ground_truth: int = 0
    late: int = 0
    future: int = 0
    latency_buckets: tuple[int, ...] = (0,) * (len(LATENCY_BUCKETS) + 1)
    latency_sum: float = 0.0
    delay_buckets: tuple[int, ...] = (0,) * (len(DELAY_BUCKETS) + 1)
    delay_sum: float = 0.0
    unjoined: Mapping[str, int] = field(default_factory=dict)
    labels_outside_window: int = 0
    labels_unknown_class: int = 0


@dataclass(frozen=True)
class StateSnapshot:
    """What the service knows, copied under its lock so a scrape sees one consistent state."""

    version: str
    evaluations: Mapping[str, ModelEvaluation] = field(default_factory=dict)
    counters: Mapping[str, ModelCounters] = field(default_factory=dict)
    invalid: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (model, reason)
    kafka_connected: bool = False
    #: events that carried a feature the model's schema lacks, per (model, feature)
    unexpected_features: Mapping[tuple[str, str], int] = field(default_factory=dict)
    consumer_lag: Mapping[tuple[str, int], int] = field(default_factory=dict)
    checkpoint: Any = None  # consumers.service.CheckpointInfo
    alerts_firing: Mapping[tuple[str, str, str], int] = field(default_factory=dict)
    deliveries: Mapping[tuple[str, str], int] = field(default_factory=dict)
    outbox_write_errors: int = 0
    retraining: Mapping[tuple[str, str], int] = field(default_factory=dict)
    #: checkpoint restores by outcome
    restores: Mapping[str, int] = field(default_factory=dict)


class DriftlineCollector(Collector):
    """Builds every ``driftline_*`` metric from ``snapshot()`` on each scrape."""

    def __init__(self, snapshot: Callable[[], StateSnapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        s = self._snapshot()
        info = InfoMetricFamily("driftline_build", "driftline build information")
        info.add_metric([], {"version": s.version})
        yield info

        connected = GaugeMetricFamily(
            "driftline_kafka_connected", "1 when the consumer reaches the Kafka cluster"
        )
        connected.add_metric([], 1.0 if s.kafka_connected else 0.0)
        yield connected

        lag = GaugeMetricFamily(
            "driftline_consumer_lag",
            "Records between the consumer's position and the partition's end",
            labels=["topic", "partition"],
        )
        for (topic, partition), value in sorted(s.consumer_lag.items()):
            lag.add_metric([topic, str(partition)], value)
        yield lag
        if s.checkpoint is not None:
            yield GaugeMetricFamily(
                "driftline_checkpoint_timestamp_seconds",
                "When the last checkpoint became durable",
                value=s.checkpoint.at,
            )
            yield GaugeMetricFamily(
                "driftline_checkpoint_duration_seconds",
                "How long the last checkpoint took",
                value=s.checkpoint.duration,
            )
            yield GaugeMetricFamily(
                "driftline_checkpoint_size_bytes",
                "Size of the last checkpoint, all partitions",
                value=s.checkpoint.size,
            )

        restores = CounterMetricFamily(
            "driftline_checkpoint_restore",
            "Checkpoint restores by outcome (restored, restored_older: the newest was unusable,"
            " reference_changed: windows restart, rebuilt: none usable, replayed from the start,"
            " none)",
            labels=["outcome"],
        )
        for outcome, n in sorted(s.restores.items()):
            restores.add_metric([outcome], n)
        yield restores

        events = CounterMetricFamily(
            "driftline_events_total", "Valid events consumed", labels=["model", "kind"]
        )
        future = CounterMetricFamily(
            "driftline_events_future",
            "Events more than windows.clock_skew ahead of the wall clock (counted in their"
            " panes, not allowed to move the watermark)",
            labels=["model"],
        )
        late = CounterMetricFamily(
            "driftline_events_late_total",
            "Events that arrived after their pane closed (counted, not windowed)",
            labels=["model"],
        )
        latency = HistogramMetricFamily(
            "driftline_prediction_latency_seconds",
            "Prediction latency reported by the serving app",
            labels=["model"],
            unit="seconds",
        )
        for model, c in sorted(s.counters.items()):
            events.add_metric([model, "prediction"], c.predictions)
            events.add_metric([model, "ground_truth"], c.ground_truth)
            late.add_metric([model], c.late)
            future.add_metric([model], c.future)
            cumulative, buckets = 0, []
            for bound, count in zip(
                (*LATENCY_BUCKETS, float("inf")), c.latency_buckets, strict=True
            ):
                cumulative += count
                buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
            latency.add_metric([model], buckets, c.latency_sum)
        delay = HistogramMetricFamily(
            "driftline_label_delay_seconds",
            "Time from a prediction to its ground truth, for joined pairs",
            labels=["model"],
            unit="seconds",
        )
        unjoined = CounterMetricFamily(
            "driftline_labels_unjoined",
            "Predictions or labels that never joined (expired, evicted, duplicate)",
            labels=["model", "reason"],
        )
        unknown = CounterMetricFamily(
            "driftline_labels_unknown_class",
            "Joined labels that are no class the model knows (after label normalisation)",
            labels=["model"],
        )
        for model, c in sorted(s.counters.items()):
            delay.add_metric([model], _buckets(DELAY_BUCKETS, c.delay_buckets), c.delay_sum)
            for reason, n in sorted(c.unjoined.items()):
                unjoined.add_metric([model, reason], n)
            unjoined.add_metric([model, "outside_window"], c.labels_outside_window)
            unknown.add_metric([model], c.labels_unknown_class)
        yield events
        yield late
        yield future
        yield latency
        yield delay
        yield unjoined
        yield unknown

        invalid = CounterMetricFamily(
            "driftline_events_invalid_total",
            "Records sent to the dead-letter topic",
            labels=["model", "reason"],
        )
        for (model, reason), count in sorted(s.invalid.items()):
            invalid.add_metric([model, reason], count)
        yield invalid

        unexpected = CounterMetricFamily(
            "driftline_unexpected_feature_events",
            "Events carrying a feature the model's schema does not have (schema drift)",
            labels=["model", "feature"],
        )
        for (model, feature), count in sorted(s.unexpected_features.items()):
            unexpected.add_metric([model, feature], count)
        yield unexpected

        yield from _evaluation_metrics(s.evaluations)

        firing = GaugeMetricFamily(
            "driftline_alerts_firing",
            "Firing alerts of driftline's own rules",
            labels=["model", "alertname", "severity"],
        )
        for (model, alertname, severity), n in sorted(s.alerts_firing.items()):
            firing.add_metric([model, alertname, severity], n)
        deliveries = CounterMetricFamily(
            "driftline_webhook_deliveries",
            "Notification delivery attempts by sink and outcome",
            labels=["sink", "outcome"],
        )
        for (sink, outcome), n in sorted(s.deliveries.items()):
            deliveries.add_metric([sink, outcome], n)
        retraining = CounterMetricFamily(
            "driftline_retraining_requests",
            "Retraining requests delivered, by model and target",
            labels=["model", "target"],
        )
        for (model, target), n in sorted(s.retraining.items()):
            retraining.add_metric([model, target], n)
        outbox = CounterMetricFamily(
            "driftline_outbox_write_errors",
            "Alert outbox writes that failed (the notification is delivered from memory and"
            " the write retried)",
        )
        outbox.add_metric([], s.outbox_write_errors)
        yield from (firing, deliveries, retraining, outbox)


def _buckets(bounds: tuple[float, ...], counts: tuple[int, ...]) -> list[tuple[str, float]]:
    """Cumulative Prometheus buckets from per-bucket counts (the last is +Inf)."""
    cumulative, out = 0, []
    for bound, count in zip((*bounds, float("inf")), counts, strict=True):
        cumulative += count
        out.append(("+Inf" if bound == float("inf") else repr(bound), float(cumulative)))
    return out


def evaluation_samples(
    evaluations: Mapping[str, ModelEvaluation],
) -> list[tuple[str, dict[str, str], float]]:
    """The samples the evaluations are exported as: what alert rules read."""
    return [
        (s.name, dict(s.labels), float(s.value))
        for family in _evaluation_metrics(evaluations)
        for s in family.samples
    ]


def _evaluation_metrics(evaluations: Mapping[str, ModelEvaluation]) -> Iterable[Metric]:
    """Model-level series: exported by the one instance that owns the model."""
    fl = ["model", "feature"]
    window = GaugeMetricFamily(
        "driftline_window_events", "Events in the merged live window", labels=["model"]
    )
    score = GaugeMetricFamily(
        "driftline_feature_drift_score", "Drift score of a feature", labels=[*fl, "method"]
    )
    pvalue = GaugeMetricFamily(
        "driftline_feature_drift_pvalue", "p-value of a drift test", labels=[*fl, "method"]
    )
    threshold = GaugeMetricFamily(
        "driftline_feature_drift_threshold",
        "Threshold of the method that decides drift",
        labels=[*fl, "method"],
    )
    drifted = GaugeMetricFamily(
        "driftline_feature_drifted", "1 when the feature drifted in the live window", labels=fl
    )
    ratio = GaugeMetricFamily(
        "driftline_drifted_features_ratio", "Share of features that drifted", labels=["model"]
    )
    missing = GaugeMetricFamily(
        "driftline_feature_missing_ratio", "Share of window events missing the feature", labels=fl
    )
    mismatch = GaugeMetricFamily(
        "driftline_feature_type_mismatch_ratio",
        "Share of window events with a value of the wrong type for the feature",
        labels=fl,
    )
    nonfinite = GaugeMetricFamily(
        "driftline_feature_nonfinite_ratio",
        "Share of window events with NaN or infinity for the feature",
        labels=fl,
    )
    out_of_range = GaugeMetricFamily(
        "driftline_feature_out_of_range_ratio",
        "Share of window events with the feature outside its valid range",
        labels=fl,
    )
    new_category = GaugeMetricFamily(
        "driftline_feature_new_category_ratio",
        "Share of window events with a category unseen in the reference",
        labels=fl,
    )
    prediction = GaugeMetricFamily(
        "driftline_prediction_drift_score",
        "Drift score of the model output",
        labels=["model", "method"],
    )
    performance = GaugeMetricFamily(
        "driftline_model_performance",
        "Realized performance on the labels joined to the window's predictions",
        labels=["model", "metric"],
    )
    estimated = GaugeMetricFamily(
        "driftline_model_performance_estimated",
        "Confidence-based estimate over all the window's predictions (calibrated scores)",
        labels=["model", "metric"],
    )
    coverage = GaugeMetricFamily(
        "driftline_label_coverage_ratio",
        "Share of the window's predictions that have their ground truth",
        labels=["model"],
    )
    last = GaugeMetricFamily(
        "driftline_last_evaluation_timestamp_seconds",
        "When the model's window was last evaluated",
        labels=["model"],
        unit="seconds",
    )
    traffic = GaugeMetricFamily(
        "driftline_segment_traffic_ratio",
        "A segment's share of the events of the model's live window",
        labels=["model", "segment"],
    )
    reference_share = GaugeMetricFamily(
        "driftline_segment_reference_ratio",
        "A segment's share of the model's reference rows",
        labels=["model", "segment"],
    )
    mix = GaugeMetricFamily(
        "driftline_segment_mix_drift_score",
        "Jensen-Shannon distance of the window's traffic across a field's segments from the"
        " reference's",
        labels=["model", "segment_field", "method"],
    )

    kpi = GaugeMetricFamily(
        "driftline_kpi", "A business KPI of the model's live window", labels=["model", "kpi"]
    )
    serving = GaugeMetricFamily(
        "driftline_model_version_serving",
        "1 for the version serving the model (the champion) while versions are side by side:"
        " the one with the most events in its window, the first by name on a tie",
        labels=["model", "model_version"],
    )

    def add(family: Metric, labels: dict[str, str], value: float) -> None:
        family.samples.append(Sample(family.name, labels, value, None))

    def export(base: dict[str, str], ev: ModelEvaluation) -> None:
        add(last, base, ev.evaluated_at)
        add(window, base, ev.window_events)
        r = ev.drifted_features_ratio
        if r is not None:
            add(ratio, base, r)
        for f in ev.features:
            labels = {**base, "feature": f.name}
            for s in f.scores:
                add(score, {**labels, "method": s.method}, s.score)
                if s.pvalue is not None:
                    add(pvalue, {**labels, "method": s.method}, s.pvalue)
            add(threshold, {**labels, "method": f.method}, f.threshold)
            if f.drifted is not None:
                add(drifted, labels, 1.0 if f.drifted else 0.0)
            if ev.window_events:
                add(missing, labels, f.missing_ratio)
                add(mismatch, labels, f.type_mismatch_ratio)
                add(nonfinite, labels, f.nonfinite_ratio)
                add(out_of_range, labels, f.out_of_range_ratio)
                if f.kind == "categorical":
                    add(new_category, labels, f.new_category_ratio)
        for s in ev.prediction:
            add(prediction, {**base, "method": s.method}, s.score)
        for metric, value in sorted(ev.performance.items()):
            add(performance, {**base, "metric": metric}, value)
        for metric, value in sorted(ev.estimated.items()):
            add(estimated, {**base, "metric": metric}, value)
        if ev.label_coverage is not None:
            add(coverage, base, ev.label_coverage)
        for name, value in sorted(ev.kpis.items()):
            add(kpi, {**base, "kpi": name}, value)

    for model, ev in sorted(evaluations.items()):
        export({"model": model}, ev)
        # a segment's series are the model's with a ``segment`` label (top K + other)
        for name, seg in ev.segments.items():
            export({"model": model, "segment": name}, seg)
            labels = {"model": model, "segment": name}
            if ev.window_events:
                add(traffic, labels, seg.window_events / ev.window_events)
            if seg.reference_share is not None:
                add(reference_share, labels, seg.reference_share)
        for field_name, s in ev.segment_mix.items():
            add(mix, {"model": model, "segment_field": field_name, "method": s.method}, s.score)
        # each live version's own window, side by side (bounded: versions.live)
        for version, vev in ev.versions.items():
            export({"model": model, "model_version": version}, vev)
        if ev.serving_version is not None:
            add(serving, {"model": model, "model_version": ev.serving_version}, 1.0)
    yield from (score, pvalue, threshold, drifted, ratio, missing, mismatch, nonfinite)
    yield from (out_of_range, new_category)
    yield prediction
    yield from (performance, estimated, coverage)
    yield last
    yield window
    yield from (traffic, reference_share, mix, kpi, serving)
