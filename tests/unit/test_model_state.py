"""ModelMonitor end to end on the pure core: binned statistics against scipy on raw data."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from monitor.drift import jensenshannon
from monitor.evaluation import DriftPolicy, MethodChoice
from monitor.events import MISMATCH, EventBatch
from monitor.model_state import LATENCY_BUCKETS, ModelMonitor, WindowSpec
from monitor.reference import build_profile
from monitor.schema import FeatureKind, FeatureSpec

CATS = np.array(["a", "b", "c", "d"], dtype=object)


def batch(t, x, c=None, score=None, latency=None, flags=None):
    n = len(t)
    return EventBatch(
        model="m",
        event_time=np.asarray(t, dtype=np.float64),
        event_id=[str(i) for i in range(n)],
        model_version=np.full(n, "v1", dtype=object),
        numerical={"x": np.asarray(x, dtype=np.float64)},
        categorical={"c": np.asarray(c if c is not None else np.full(n, "a"), dtype=object)},
        score=np.asarray(score if score is not None else np.full(n, np.nan), dtype=np.float64),
        label=np.full(n, None, dtype=object),
        latency_ms=np.asarray(latency if latency is not None else np.full(n, np.nan)),
        flags=flags or {},
    )


def monitor_for(ref_x, ref_c, ref_score=None, policy=None):
    cols = {"x": ref_x, "c": ref_c}
    if ref_score is not None:
        cols["prediction"] = ref_score
    profile = build_profile("m", cols)
    # one 100 s pane that is the whole window
    return ModelMonitor(profile, WindowSpec(100.0, 100.0, 0.0), policy)


def close(monitor):
    monitor.advance(100.0)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(2000, 5000),
    shift=st.floats(0.0, 1.0),
)
def test_binned_ks_and_wasserstein_track_scipy_on_raw_values(seed, n, shift):
    rng = np.random.default_rng(seed)
    ref = rng.normal(0, 1, n)
    cur = rng.normal(shift, 1, n)
    m = monitor_for(ref, rng.choice(CATS, n))
    m.ingest(batch(rng.uniform(0, 100, n), cur))
    close(m)
    ev = m.evaluate(now=1.0)
    f = ev.features[0]
    scores = {s.method: s for s in f.scores}
    assert set(scores) == {"wasserstein", "psi", "ks"}
    w_raw = stats.wasserstein_distance(ref, cur) / ref.std()
    ks_raw = stats.ks_2samp(ref, cur)
    # values beyond the reference range count at the extreme bin's point: a 1-std shift
    # puts about 1% of the window there, which costs up to 0.03 (measured on 160 draws)
    assert scores["wasserstein"].score == pytest.approx(w_raw, abs=0.04)
    assert scores["ks"].score == pytest.approx(ks_raw.statistic, abs=0.02)
    w = scores["wasserstein"].score
    assert f.threshold_kind == "calibrated"
    assert f.drifted == (w >= f.threshold and w >= f.min_effect)


def test_categorical_scores_use_the_window_counts():
    rng = np.random.default_rng(5)
    ref_c = rng.choice(CATS, 4000, p=[0.4, 0.3, 0.2, 0.1])
    cur_c = rng.choice(np.append(CATS, "zz"), 3000, p=[0.1, 0.1, 0.1, 0.6, 0.1])
    m = monitor_for(rng.normal(size=4000), ref_c)
    m.ingest(batch(rng.uniform(0, 100, 3000), rng.normal(size=3000), cur_c))
    close(m)
    f = m.evaluate(1.0).features[1]
    assert f.method == "jensenshannon"
    assert f.drifted is True
    ref_counts = [int((ref_c == k).sum()) for k in ("a", "b", "c", "d")] + [0]
    cur_counts = [int((cur_c == k).sum()) for k in ("a", "b", "c", "d")] + [
        int((cur_c == "zz").sum())
    ]
    assert f.decision.score == pytest.approx(jensenshannon(ref_counts, cur_counts), abs=1e-12)
    assert f.new_category_ratio == pytest.approx((cur_c == "zz").mean())
    table = np.array([ref_counts, cur_counts])
    chi = stats.chi2_contingency(table[:, table.sum(axis=0) > 0], correction=False)
    scores = {s.method: s for s in f.scores}
    assert scores["chisquare"].score == pytest.approx(chi.statistic, rel=1e-9)
    assert scores["chisquare"].pvalue == pytest.approx(chi.pvalue, rel=1e-6, abs=1e-300)


def test_quality_ratios_equal_numpy():
    rng = np.random.default_rng(9)
    ref = rng.normal(size=2000)
    m = monitor_for(ref, rng.choice(CATS, 2000))
    x = rng.normal(0, 2, 1000)
    x[::10] = np.nan
    c = rng.choice(np.append(CATS, [None, "new"]), 1000).astype(object)
    flags = np.zeros(1000, dtype=np.int8)
    flags[5::50] = MISMATCH
    x[5::50] = np.nan
    m.ingest(batch(rng.uniform(0, 100, 1000), x, c, flags={"x": flags}))
    close(m)
    fx, fc = m.evaluate(1.0).features
    mismatch = flags == MISMATCH
    assert fx.type_mismatch_ratio == pytest.approx(mismatch.mean())
    assert fx.missing_ratio == pytest.approx((np.isnan(x) & ~mismatch).mean())
    finite = x[np.isfinite(x)]
    out = ((finite < ref.min()) | (finite > ref.max())).sum()
    assert fx.out_of_range_ratio == pytest.approx(out / 1000)
    assert fc.missing_ratio == pytest.approx(np.mean([v is None for v in c]))
    assert fc.new_category_ratio == pytest.approx(np.mean([v == "new" for v in c]))


def test_min_events_gates_verdicts_and_overrides_apply():
    rng = np.random.default_rng(1)
    policy = DriftPolicy(min_events=500, overrides={"x": MethodChoice("psi", 0.2, ("ks",))})
    m = monitor_for(rng.normal(size=2000), rng.choice(CATS, 2000), policy=policy)
    m.ingest(batch(rng.uniform(0, 100, 499), rng.normal(3, 1, 499)))
    close(m)
    ev = m.evaluate(1.0)
    fx = ev.features[0]
    assert fx.method == "psi"
    assert fx.threshold == 0.2
    assert [s.method for s in fx.scores] == ["psi", "ks"]
    assert fx.drifted is None
    assert ev.drifted_features_ratio is None
    assert fx.decision.score > 0.2  # a verdict would have said drift


def test_prediction_drift_and_latency_histogram():
    rng = np.random.default_rng(2)
    m = monitor_for(rng.normal(size=2000), rng.choice(CATS, 2000), ref_score=rng.beta(2, 5, 2000))
    lat = rng.gamma(2.0, 5.0, 1000)
    m.ingest(
        batch(
            rng.uniform(0, 100, 1000),
            rng.normal(size=1000),
            score=rng.beta(5, 2, 1000),
            latency=lat,
        )
    )
    close(m)
    ev = m.evaluate(1.0)
    methods = {s.method: s.score for s in ev.prediction}
    assert methods["wasserstein"] > 0.5
    expected = np.histogram(lat / 1000, bins=[-np.inf, *LATENCY_BUCKETS, np.inf])[0]
    # Prometheus buckets are upper-inclusive; np.histogram is lower-inclusive; no ties here
    assert m.latency_buckets.tolist() == expected.tolist()
    assert m.latency_sum == pytest.approx(lat.sum() / 1000)


def test_feature_kinds_of_profile():
    p = build_profile(
        "m",
        {"x": np.arange(10.0), "c": np.array(list("ababababab"), dtype=object)},
        [FeatureSpec("x", FeatureKind.NUMERICAL), FeatureSpec("c", FeatureKind.CATEGORICAL)],
    )
    assert [f.kind for f in p.features] == [FeatureKind.NUMERICAL, FeatureKind.CATEGORICAL]


def test_min_events_counts_a_features_own_values_not_the_window():
    """A feature missing in 97% of a 1 000-event window has ~30 values: no verdict on it,
    while the fully present feature of the same window is judged."""
    rng = np.random.default_rng(2)
    m = monitor_for(rng.normal(size=2000), rng.choice(CATS, 2000), policy=DriftPolicy())
    x = rng.normal(size=1000)
    x[rng.random(1000) < 0.97] = np.nan
    m.ingest(batch(rng.uniform(0, 100, 1000), x, c=rng.choice(CATS, 1000)))
    close(m)
    ev = m.evaluate(1.0)
    fx, fc = ev.features
    assert fx.events == int(np.count_nonzero(~np.isnan(x))) < 100
    assert fx.drifted is None
    assert fc.events == 1000
    assert fc.drifted is not None
