"""Calibrated drift thresholds: the false-alarm rate they promise is the one they give."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.drift import chisquare, compare, psi, rows, wasserstein
from monitor.evaluation import DriftPolicy, MethodChoice
from monitor.events import EventBatch
from monitor.model_state import ModelMonitor, WindowSpec, feature_scores, threshold_for
from monitor.null_model import GRID, NullTable, _pareto, wasserstein_fixed
from monitor.reference import BinningOptions, ReferenceProfile, build_profile

SHAPES = {
    "normal": lambda g, n: g.normal(size=n),
    "heavy_tailed_t2": lambda g, n: g.standard_t(2, size=n),
    "zero_inflated": lambda g, n: np.where(g.random(n) < 0.6, 0.0, g.exponential(size=n)),
    "integers_with_ties": lambda g, n: g.poisson(3, size=n).astype(float),
    "categorical_5": lambda g, n: g.choice(
        np.array(list("abcde"), dtype=object), size=n, p=[0.4, 0.25, 0.15, 0.12, 0.08]
    ),
}


def window_counts(fp, x):
    codes = fp.bins.assign(x)
    if fp.kind.value == "numerical":
        return np.bincount(codes, minlength=fp.counts.size)
    return np.bincount(codes[codes >= 0], minlength=fp.counts.size)


def false_alarm_rate(shape, method, n, alpha, *, references=12, windows=250, m=3000, seed=0):
    """Brute force: fresh references and stationary windows drawn from the same law."""
    rng = np.random.default_rng(seed)
    draw = SHAPES[shape]
    flagged = 0
    for _ in range(references):
        fp = build_profile("m", {"x": draw(rng, m)}).features[0]
        threshold, how = threshold_for(fp, MethodChoice(method), n, alpha)
        assert how == "calibrated"
        for _ in range(windows):
            (score,) = feature_scores(fp, window_counts(fp, draw(rng, n)), (method,))
            flagged += score.score >= threshold
    return flagged / (references * windows)


@pytest.mark.parametrize(
    ("shape", "method", "n"),
    [
        ("normal", "wasserstein", 300),
        ("heavy_tailed_t2", "wasserstein", 300),
        ("zero_inflated", "wasserstein", 1000),
        ("integers_with_ties", "psi", 500),
        ("categorical_5", "jensenshannon", 300),
    ],
)
def test_calibrated_thresholds_hold_their_false_alarm_rate(shape, method, n):
    # n between grid sizes on purpose; 3 000 windows over 12 references (the rate given
    # one reference varies with it), so 0.05 is 150 expected alarms
    rate = false_alarm_rate(shape, method, n, 0.05)
    assert 0.5 * 0.05 <= rate <= 2 * 0.05, rate


def test_the_old_fixed_threshold_flags_small_windows_without_drift():
    # the reason for all this: W >= 0.1 on 100 values of an unchanged normal feature
    rng = np.random.default_rng(1)
    fp = build_profile("m", {"x": rng.normal(size=5000)}).features[0]
    flags = []
    for _ in range(300):
        (s,) = feature_scores(fp, window_counts(fp, rng.normal(size=100)), ("wasserstein",))
        flags.append(s.score >= 0.1)
    assert np.mean(flags) > 0.4
    calibrated, _ = threshold_for(fp, MethodChoice("wasserstein"), 100, 0.01)
    assert calibrated > 0.2


def test_thresholds_shrink_with_the_window_and_with_alpha():
    rng = np.random.default_rng(2)
    fp = build_profile("m", {"x": rng.lognormal(size=5000)}).features[0]
    table = fp.null_table()
    sizes = [100, 500, 3000, 20_000, 10**6]
    for method in ("wasserstein", "psi", "jensenshannon", "hellinger", "kl"):
        at = [table.threshold(method, n, 0.01) for n in sizes]
        assert all(a > b for a, b in itertools.pairwise(at)), (method, at)
        assert table.threshold(method, 1000, 0.001) > table.threshold(method, 1000, 0.01)
        assert table.threshold(method, 1000, 0.1) < table.threshold(method, 1000, 0.05)


def test_a_fixed_threshold_keeps_its_meaning_and_tests_take_the_alpha():
    rng = np.random.default_rng(3)
    fp = build_profile("m", {"x": rng.normal(size=1000)}).features[0]
    assert threshold_for(fp, MethodChoice("psi", 0.2), 500, 0.01) == (0.2, "fixed")
    assert threshold_for(fp, MethodChoice("ks"), 500, 0.004) == (0.004, "alpha")
    value, how = threshold_for(fp, MethodChoice("psi"), 0, 0.01)
    assert np.isnan(value)
    assert how == "calibrated"


def batch(times, x, c):
    n = len(times)
    return EventBatch(
        model="m",
        event_time=np.asarray(times, dtype=np.float64),
        event_id=[str(i) for i in range(n)],
        model_version=np.full(n, None, dtype=object),
        numerical={"x": np.asarray(x, dtype=np.float64)},
        categorical={"c": np.asarray(c, dtype=object)},
        score=np.full(n, np.nan),
        label=np.full(n, None, dtype=object),
        latency_ms=np.full(n, np.nan),
    )


def monitor(policy, rng, m=5000):
    cats = np.array(list("abcd"), dtype=object)
    profile = build_profile("m", {"x": rng.normal(size=m), "c": rng.choice(cats, m)})
    return ModelMonitor(profile, WindowSpec(100.0, 100.0, 0.0), policy), cats


def test_the_budget_is_split_across_the_features():
    assert DriftPolicy(false_alarm_rate=0.02).feature_alpha(4) == 0.005
    rng = np.random.default_rng(4)
    # per evaluation only: the bound on false alerts over time is tested in test_repeated
    mon, cats = monitor(DriftPolicy(false_alarm_rate=0.02, false_alert_interval=None), rng)
    n = 700
    mon.ingest(batch(rng.uniform(0, 100, n), rng.normal(size=n), rng.choice(cats, n)))
    mon.advance(100.0)
    fx, fc = mon.evaluate(now=0.0).features
    x_null = mon.layout.features[0].profile.null_table()
    c_null = mon.layout.features[1].profile.null_table()
    assert fx.threshold == x_null.threshold("wasserstein", n, 0.01)
    assert fc.threshold == c_null.threshold("jensenshannon", n, 0.01)
    assert (fx.threshold_kind, fc.threshold_kind) == ("calibrated", "calibrated")


def test_min_effect_keeps_a_huge_window_quiet_on_a_negligible_move():
    rng = np.random.default_rng(5)
    n = 200_000
    results = {}
    for effect in (None, 0.0):
        policy = DriftPolicy(numerical=MethodChoice("wasserstein", None, (), effect))
        mon, cats = monitor(policy, np.random.default_rng(6), m=50_000)
        mon.ingest(batch(rng.uniform(0, 100, n), rng.normal(0.03, 1, n), rng.choice(cats, n)))
        mon.advance(100.0)
        fx = mon.evaluate(now=0.0).features[0]
        results[effect] = fx
    default, none = results[None], results[0.0]
    assert default.decision.score >= default.threshold  # significant...
    assert default.decision.score < default.min_effect == 0.05  # ...but negligible
    assert default.drifted is False
    assert none.drifted is True


def test_one_value_below_the_reference_minimum_weighs_like_any_other():
    rng = np.random.default_rng(7)
    ref = rng.normal(size=5000)
    fp = build_profile("m", {"x": ref}).features[0]
    window = rng.normal(size=100)
    window = np.where(window < ref.min(), ref.min(), window)
    base = window_counts(fp, window)
    window[0] = ref.min() - 1.0
    outlier = window_counts(fp, window)
    starts = fp.bins.coarse_starts
    coarse = [np.add.reduceat(c, starts) for c in (fp.counts, base, outlier)]
    assert coarse[0][0] > 0  # the first group holds real reference mass
    assert abs(psi(coarse[0], coarse[2]) - psi(coarse[0], coarse[1])) < 0.01
    assert chisquare(coarse[0], coarse[2])[1] > 1e-3


def test_tables_travel_with_a_reference_file_and_are_not_recomputed():
    rng = np.random.default_rng(8)
    profile = build_profile(
        "m", {"x": rng.normal(size=2000), "c": rng.choice(np.array(list("xyz")), 2000)}
    )
    data = json.loads(json.dumps(profile.to_dict(calibration=True)))
    assert all("null" not in f for f in profile.to_dict()["features"])  # not the bins' identity
    back = ReferenceProfile.from_dict(data)
    for a, b in zip(profile.features, back.features, strict=True):
        assert "table" in b._null  # read, not simulated again
        for method in a.null_table().methods:
            assert a.null_table().threshold(method, 777, 0.003) == pytest.approx(
                b.null_table().threshold(method, 777, 0.003)
            )
    stale = {**data["features"][0]["null"], "grid": [1, 2]}
    assert NullTable.from_dict(stale) is None
    fewer_draws = {**data["features"][0]["null"], "draws": 2000}  # an older, noisier table
    assert NullTable.from_dict(fewer_draws) is None


@pytest.mark.parametrize("n", [100, 300, 1000])
def test_the_fitted_far_tail_holds_one_features_share_of_a_25_feature_budget(n):
    # 0.01 / 25 = 4e-4 lies far beyond the simulated 95% quantile, where the tail is
    # fitted; 20 references x 10 000 windows, so about 80 expected alarms
    alpha = DriftPolicy().feature_alpha(25)
    levels = np.array(list("abcde"), dtype=object)
    p = np.array([0.4, 0.25, 0.15, 0.12, 0.08])
    rng = np.random.default_rng(11)
    flagged = total = 0
    for _ in range(20):
        fp = build_profile("m", {"x": rng.choice(levels, 5000, p=p)}).features[0]
        probs = np.bincount(fp.bins.assign(levels), weights=p, minlength=fp.counts.size)
        windows = rng.multinomial(n, probs / probs.sum(), size=10_000)
        starts = fp.bins.coarse_starts
        cur = np.add.reduceat(windows, starts, axis=1).astype(float)
        ref = np.broadcast_to(np.add.reduceat(fp.counts, starts).astype(float), cur.shape)
        score = rows("jensenshannon", ref, cur)  # the service's formula, on every window at once
        (first,) = feature_scores(fp, windows[0], ("jensenshannon",))
        assert first.score == pytest.approx(score[0])
        threshold, _ = threshold_for(fp, MethodChoice("jensenshannon"), n, alpha)
        flagged += int((score >= threshold).sum())
        total += len(score)
    assert 0.5 * alpha <= flagged / total <= 2 * alpha, flagged / total / alpha


def test_a_tail_is_never_fitted_as_one_that_ends():
    # a bounded excess (uniform) has a negative generalized Pareto shape; extrapolating it
    # would put the threshold at a bound 400 draws cannot locate
    excess = np.random.default_rng(3).uniform(0, 1, 400)
    scale, shape = _pareto(excess)
    assert shape == 0.0
    assert scale == pytest.approx(excess.mean())


def test_the_simulation_is_the_same_on_every_instance():
    rng = np.random.default_rng(9)
    cols = {"x": rng.normal(size=3000)}
    a = build_profile("m", cols).features[0].null_table()
    b = build_profile("m", cols).features[0].null_table()
    assert a.to_dict() == b.to_dict()
    assert len(GRID) == len(a.quantiles["wasserstein"])


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    k=st.integers(2, 30),
)
def test_the_simulations_wasserstein_is_the_services(seed, k):
    rng = np.random.default_rng(seed)
    ref = rng.integers(0, 5, k).astype(float)
    cur = rng.integers(0, 5, k).astype(float)
    ref[0] += 1
    cur[-1] += 1
    at = np.cumsum(rng.random(k) + 0.01)
    expected = wasserstein(ref, cur, at, at, ref_std=0.0)
    got = wasserstein_fixed(ref[None], cur[None], at[None])[0]
    assert got == pytest.approx(expected, abs=1e-12)


def test_top_k_categories_are_not_chosen_on_the_rows_they_are_compared_with():
    # 200 levels, top 50 kept: ranked and counted on the same rows, the kept categories'
    # reference shares are inflated and a stationary 100k window looks drifted
    rng = np.random.default_rng(10)
    levels = np.array([f"c{i}" for i in range(200)], dtype=object)
    p = 1.0 / np.arange(1, 201) ** 0.6
    p /= p.sum()
    fp = build_profile("m", {"c": rng.choice(levels, 20_000, p=p)}).features[0]
    assert len(fp.bins.categories) == BinningOptions().max_categories
    cur = window_counts(fp, rng.choice(levels, 200_000, p=p))
    starts = fp.bins.coarse_starts
    ref_c, cur_c = np.add.reduceat(fp.counts, starts), np.add.reduceat(cur, starts)
    _, pvalue = chisquare(ref_c, cur_c)
    assert pvalue > 1e-4
    assert compare("psi", ref_c, cur_c).score < 0.01
