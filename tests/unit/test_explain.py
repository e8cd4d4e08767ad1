"""The "why" of a verdict against numpy on the same events: summaries, shares, and
contributions that add up to the score."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.drift import METHODS, SQUARED
from monitor.evaluation import DriftPolicy, MethodChoice
from monitor.explain import CHART_BINS, QUANTILES, contributions, explain
from monitor.model_state import feature_scores
from monitor.reference import BinningOptions, build_profile
from tests.unit.test_model_state import CATS, batch, close, monitor_for

REF_N = 4000


#: fixed thresholds, for the tests of summaries and shares (calibrating a new reference
#: every example would take most of their time)
FIXED = DriftPolicy(MethodChoice("wasserstein", 0.1), MethodChoice("jensenshannon", 0.1))


def evaluate(ref_x, ref_c, x, c, policy=None):
    """The API's feature dicts of one window holding exactly ``x`` and ``c``."""
    m = monitor_for(ref_x, ref_c, policy=policy)
    rng = np.random.default_rng(0)
    m.ingest(batch(rng.uniform(0, 100, len(x)), x, c))
    close(m)
    features = m.evaluate(now=1.0).to_dict()["features"]
    return {f["name"]: f for f in features}, m.profile


def bin_bounds(edges, value):
    """The interval of the reference bin holding ``value`` (outer bins: unbounded)."""
    i = int(np.searchsorted(edges, value, side="right"))
    lo = edges[i - 1] if i >= 1 else -math.inf
    hi = edges[i] if i < edges.size else math.inf
    return lo, hi


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(150, 3000),
    shift=st.floats(-1.5, 1.5),
    scale=st.floats(0.2, 3.0),
    outside=st.booleans(),
)
def test_numerical_summaries_match_numpy(seed, n, shift, scale, outside):
    rng = np.random.default_rng(seed)
    ref = rng.normal(0.0, 1.0, REF_N)
    x = rng.normal(shift, scale, n)
    if not outside:  # the window's values inside the reference range
        x = np.clip(x, ref.min(), ref.max())
    feats, profile = evaluate(ref, rng.choice(CATS, REF_N), x, rng.choice(CATS, n), FIXED)
    why = feats["x"]["why"]
    edges = profile.features[0].bins.edges

    assert why["reference"]["count"] == REF_N
    assert why["reference"]["mean"] == pytest.approx(ref.mean(), rel=1e-9, abs=1e-12)
    assert why["reference"]["std"] == pytest.approx(ref.std(), rel=1e-9)
    cur = why["current"]
    assert cur["count"] == n
    assert cur["mean"] == pytest.approx(x.mean(), rel=1e-9, abs=1e-9)
    for q in QUANTILES:
        estimate = cur["quantiles"][str(q)]
        # the q-th value of the window (numpy's inverted CDF): the estimate is in its bin
        exact = np.quantile(x, q, method="inverted_cdf")
        lo, hi = bin_bounds(edges, exact)
        if math.isfinite(lo) and math.isfinite(hi):
            assert lo - 1e-9 <= estimate <= hi + 1e-9
        ref_exact = np.quantile(ref, q)
        lo, hi = bin_bounds(edges, ref_exact)
        assert lo - 1e-9 <= why["reference"]["quantiles"][str(q)] <= hi + 1e-9
    if not outside:
        # the spread inside a bin is the reference's: the error is at most a bin's
        # largest possible variance, (width / 2)^2, over the bins the window uses
        used = np.unique(np.searchsorted(edges, x, side="right"))
        used = used[(used >= 1) & (used < edges.size)]
        widest = float(np.max(edges[used] - edges[used - 1]))
        assert abs(cur["std"] ** 2 - x.var()) <= (widest / 2) ** 2 + 1e-9


def test_numerical_quantiles_are_close_on_smooth_data():
    rng = np.random.default_rng(3)
    ref, x = rng.normal(0, 1, REF_N), rng.normal(0.7, 1.3, 3000)
    feats, profile = evaluate(ref, rng.choice(CATS, REF_N), x, rng.choice(CATS, 3000))
    cur = feats["x"]["why"]["current"]
    edges = profile.features[0].bins.edges
    for q in QUANTILES:
        exact = np.quantile(x, q)
        lo, hi = bin_bounds(edges, exact)
        # within 0.05 std, or within its bin where the reference's percentiles are far apart
        tolerance = max(0.05, hi - lo) if math.isfinite(hi - lo) else 0.05
        assert cur["quantiles"][str(q)] == pytest.approx(exact, abs=tolerance)
    assert cur["std"] == pytest.approx(x.std(), rel=0.02)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 2000),
    weights=st.lists(st.floats(0.0, 1.0), min_size=6, max_size=6),
)
def test_category_shares_match_numpy(seed, n, weights):
    rng = np.random.default_rng(seed)
    ref_c = rng.choice(CATS, REF_N, p=[0.4, 0.3, 0.2, 0.1])
    values = np.array([*CATS, "zz", None], dtype=object)  # a new category and missing
    w = np.asarray(weights) + 1e-3
    c = rng.choice(values, n, p=w / w.sum())
    feats, _ = evaluate(rng.normal(0, 1, REF_N), ref_c, rng.normal(0, 1, n), c, FIXED)
    why = feats["c"]["why"]
    present = np.array([v for v in c if v is not None], dtype=object)
    if present.size == 0:
        assert why["current"] is None
        return
    names, counts = np.unique(present.astype(str), return_counts=True)
    numpy_shares = dict(zip(names.tolist(), (counts / present.size).tolist(), strict=True))
    shares = why["current"]["shares"]
    assert why["current"]["count"] == present.size
    for cat in CATS:
        assert shares[cat] == pytest.approx(numpy_shares.get(cat, 0.0), abs=1e-12)
    assert shares["new"] == pytest.approx(numpy_shares.get("zz", 0.0), abs=1e-12)
    assert shares["other"] == 0.0
    ref_names, ref_counts = np.unique(ref_c.astype(str), return_counts=True)
    for cat, count in zip(ref_names, ref_counts, strict=True):
        assert why["reference"]["shares"][cat] == pytest.approx(count / REF_N, abs=1e-12)
    # the chart bins: each category, then other and new together
    bins = {b["label"]: b for b in why["bins"]}
    assert bins["other/new"]["current_share"] == pytest.approx(shares["new"], abs=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(1, 3000),
    shift=st.floats(-2.0, 2.0),
    method=st.sampled_from(METHODS),
    categorical=st.booleans(),
)
def test_contributions_add_up_to_the_score(seed, n, shift, method, categorical):
    rng = np.random.default_rng(seed)
    if categorical:
        if method in ("wasserstein", "ks"):
            method = "chisquare"
        p = np.array([0.4, 0.3, 0.2, 0.1])
        q = np.roll(p, int(abs(shift) * 2))
        fp = build_profile("m", {"c": rng.choice(CATS, REF_N, p=p)}).features[0]
        cur = np.bincount(fp.bins.assign(rng.choice(CATS, n, p=q)), minlength=6)
    else:
        fp = build_profile("m", {"x": rng.normal(0, 1, REF_N)}).features[0]
        cur = np.bincount(fp.bins.assign(rng.normal(shift, 1, n)), minlength=fp.counts.size)
    (score,) = feature_scores(fp, cur, (method,))
    terms, adds_up_to = contributions(fp, method, cur)
    assert terms.size == fp.bins.coarse_starts.size  # one per chart bin
    if method != "kl":  # KL's term is negative where the window has less than the reference
        assert np.all(terms >= -1e-12)
    if method == "ks":
        assert adds_up_to == "max"
        assert terms.max() == pytest.approx(score.score, abs=1e-12)
    elif method in SQUARED:
        assert adds_up_to == "score_squared"
        assert terms.sum() == pytest.approx(score.score**2, rel=1e-9, abs=1e-12)
    else:
        assert adds_up_to == "score"
        assert terms.sum() == pytest.approx(score.score, rel=1e-9, abs=1e-12)


def test_top_bins_are_where_the_window_moved():
    rng = np.random.default_rng(11)
    ref = rng.normal(0, 1, REF_N)
    x = np.concatenate([rng.normal(0, 1, 1500), rng.normal(3.5, 0.1, 500)])  # a new bump
    feats, _ = evaluate(ref, rng.choice(CATS, REF_N), x, rng.choice(CATS, 2000))
    f = feats["x"]
    top = f["why"]["top_bins"][0]
    assert f["drifted"] is True
    assert top["high"] == math.inf  # the highest bin, where the bump is
    assert top["current_share"] > top["reference_share"] + 0.2
    contribution = [b["contribution"] for b in f["why"]["bins"]]
    assert top["contribution"] == max(contribution)
    assert sum(contribution) == pytest.approx(f["score"], rel=1e-9)


def test_the_verdict_names_the_rule_that_decided():
    rng = np.random.default_rng(2)
    ref_x, ref_c = rng.normal(0, 1, REF_N), rng.choice(CATS, REF_N)
    # too few values: no verdict
    feats, _ = evaluate(ref_x, ref_c, rng.normal(0, 1, 50), rng.choice(CATS, 50))
    v = feats["x"]["verdict"]
    assert (v["drifted"], v["rule"], v["values"], v["min_events"]) == (None, "min_events", 50, 100)
    # drifted: past the calibrated threshold and the minimum effect
    feats, _ = evaluate(ref_x, ref_c, rng.normal(1, 1, 2000), rng.choice(CATS, 2000))
    v = feats["x"]["verdict"]
    assert (v["drifted"], v["rule"], v["threshold_kind"]) == (True, "threshold", "calibrated")
    assert feats["x"]["score"] >= v["threshold"]
    assert feats["x"]["score"] >= v["min_effect"]
    # a fixed threshold of 0 is always passed: a huge minimum effect decides
    policy = DriftPolicy(numerical=MethodChoice("psi", 0.0, (), min_effect=50.0))
    feats, _ = evaluate(ref_x, ref_c, rng.normal(1, 1, 2000), rng.choice(CATS, 2000), policy)
    v = feats["x"]["verdict"]
    assert (v["drifted"], v["rule"], v["threshold_kind"]) == (False, "min_effect", "fixed")
    assert v["threshold"] == 0.0
    assert v["min_effect"] == 50.0
    # a test decides on its p-value against the feature's alpha
    policy = DriftPolicy(numerical=MethodChoice("ks", None, ()))
    feats, _ = evaluate(ref_x, ref_c, rng.normal(0, 1, 2000), rng.choice(CATS, 2000), policy)
    v = feats["x"]["verdict"]
    assert (v["rule"], v["threshold_kind"], v["compared"]) == ("threshold", "alpha", "pvalue")
    assert v["drifted"] == (feats["x"]["pvalue"] < v["threshold"])


def test_a_feature_with_hundreds_of_categories_charts_at_most_chart_bins():
    rng = np.random.default_rng(12)
    levels = np.array([f"c{i}" for i in range(500)], dtype=object)
    p = 1.0 / np.arange(1, 501) ** 0.8
    p /= p.sum()
    profile = build_profile(
        "m", {"c": rng.choice(levels, 20_000, p=p)}, options=BinningOptions(max_categories=300)
    )
    fp = profile.features[0]
    cur = np.bincount(fp.bins.assign(rng.choice(levels, 5000, p=p[::-1])), minlength=fp.counts.size)
    (score,) = feature_scores(fp, cur, ("jensenshannon",))
    why = explain(fp, "jensenshannon", cur, np.zeros(cur.size))
    bins = why["bins"]
    assert len(bins) == CHART_BINS < fp.bins.coarse_starts.size
    assert sum(b["reference_share"] for b in bins) == pytest.approx(1.0)
    assert sum(b["current_share"] for b in bins) == pytest.approx(1.0)
    # the merged bin carries the rest's terms, so the chart still adds up to the score
    assert sum(b["contribution"] for b in bins) == pytest.approx(score.score**2, rel=1e-9)
    assert bins[-1]["label"] == f"{fp.bins.coarse_starts.size - CHART_BINS + 1} more"
