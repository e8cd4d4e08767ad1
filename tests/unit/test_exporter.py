"""The Collector: every exported value comes from the snapshot it is handed."""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from consumers.exporter import (
    DriftlineCollector,
    ModelCounters,
    StateSnapshot,
    evaluation_samples,
)
from monitor.config import RULE_METRICS
from monitor.events import EventBatch
from monitor.model_state import ModelMonitor, WindowSpec
from monitor.reference import build_profile


def evaluated_monitor():
    rng = np.random.default_rng(0)
    cats = np.array(["a", "b", "c"], dtype=object)
    profile = build_profile(
        "fraud",
        {"x": rng.normal(size=2000), "c": rng.choice(cats, 2000), "prediction": rng.random(2000)},
    )
    m = ModelMonitor(profile, WindowSpec(10.0, 10.0, 0.0))
    n = 500
    m.ingest(
        EventBatch(
            model="fraud",
            event_time=rng.uniform(0, 10, n),
            event_id=[str(i) for i in range(n)],
            model_version=np.full(n, None, dtype=object),
            numerical={"x": rng.normal(2, 1, n)},
            categorical={"c": rng.choice(cats, n)},
            score=rng.random(n),
            label=np.full(n, None, dtype=object),
            latency_ms=np.full(n, 3.0),
        )
    )
    m.advance(10.0)
    return m


def test_collector_exports_the_snapshot():
    m = evaluated_monitor()
    ev = m.evaluate(now=1234.5)
    snap = StateSnapshot(
        version="1.2.3",
        evaluations={"fraud": ev},
        counters={
            "fraud": ModelCounters(
                predictions=500,
                late=2,
                latency_buckets=tuple(m.latency_buckets.tolist()),
                latency_sum=m.latency_sum,
            )
        },
        invalid={("unknown", "invalid_json"): 3},
        kafka_connected=True,
    )
    registry = CollectorRegistry()
    registry.register(DriftlineCollector(lambda: snap))
    get = registry.get_sample_value
    assert get("driftline_build_info", {"version": "1.2.3"}) == 1.0
    assert get("driftline_events_total", {"model": "fraud", "kind": "prediction"}) == 500
    assert get("driftline_events_late_total", {"model": "fraud"}) == 2
    assert (
        get("driftline_events_invalid_total", {"model": "unknown", "reason": "invalid_json"}) == 3
    )
    assert get("driftline_window_events", {"model": "fraud"}) == 500
    assert get("driftline_kafka_connected") == 1.0
    fx = ev.features[0]
    labels = {"model": "fraud", "feature": "x"}
    assert (
        get("driftline_feature_drift_score", {**labels, "method": "wasserstein"})
        == fx.decision.score
    )
    # calibrated: the null quantile for the window's 500 values at the monitor's alpha
    null = m.layout.features[0].profile.null_table()
    assert m.feature_alpha <= 0.01 / 2
    assert fx.threshold == null.threshold("wasserstein", 500, m.feature_alpha)
    assert get("driftline_feature_drift_threshold", {**labels, "method": "wasserstein"}) == (
        fx.threshold
    )
    assert get("driftline_feature_drift_pvalue", {**labels, "method": "ks"}) is not None
    assert get("driftline_feature_drifted", labels) == 1.0
    assert get("driftline_feature_drifted", {"model": "fraud", "feature": "c"}) == 0.0
    assert get("driftline_drifted_features_ratio", {"model": "fraud"}) == 0.5
    assert get("driftline_feature_missing_ratio", labels) == 0.0
    assert get("driftline_feature_new_category_ratio", {"model": "fraud", "feature": "c"}) == 0.0
    assert get("driftline_prediction_drift_score", {"model": "fraud", "method": "wasserstein"}) >= 0
    assert get("driftline_last_evaluation_timestamp_seconds", {"model": "fraud"}) == 1234.5
    assert get("driftline_prediction_latency_seconds_count", {"model": "fraud"}) == 500
    assert (
        get("driftline_prediction_latency_seconds_bucket", {"model": "fraud", "le": "0.0025"}) == 0
    )
    assert (
        get("driftline_prediction_latency_seconds_bucket", {"model": "fraud", "le": "0.005"}) == 500
    )
    # the text exposition parses back
    families = {f.name for f in text_string_to_metric_families(generate_latest(registry).decode())}
    assert "driftline_feature_drift_score" in families


def test_no_verdict_below_min_events_and_no_evaluation_yet():
    snap = StateSnapshot(version="x", counters={"fraud": ModelCounters()})
    registry = CollectorRegistry()
    registry.register(DriftlineCollector(lambda: snap))
    # model-level series come from the owner's evaluation only: none before it
    assert registry.get_sample_value("driftline_window_events", {"model": "fraud"}) is None
    assert (
        registry.get_sample_value("driftline_feature_drifted", {"model": "fraud", "feature": "x"})
        is None
    )


def test_rules_read_exactly_the_model_level_series():
    """What alert rules may name (config) is what the owner of a model exports about it."""
    ev = evaluated_monitor().evaluate(now=1.0)
    snap = StateSnapshot(version="x", evaluations={"fraud": ev})
    registry = CollectorRegistry()
    registry.register(DriftlineCollector(lambda: snap))
    model_level = {
        f.name.removesuffix("_total") for f in registry.collect() if f.name in RULE_METRICS
    }
    assert model_level == RULE_METRICS
    samples = evaluation_samples({"fraud": ev})
    assert {name for name, _, _ in samples} <= RULE_METRICS
    assert {name for name, _, _ in evaluation_samples({})} == set()
