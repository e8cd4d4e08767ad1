"""Drift statistics on count vectors agree with independent numpy/scipy computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray
from scipy import stats
from scipy.spatial.distance import euclidean
from scipy.spatial.distance import jensenshannon as scipy_jensenshannon
from scipy.special import rel_entr

from monitor.drift import (
    DISTANCES,
    EPSILON,
    METHODS,
    TESTS,
    DriftScore,
    chisquare,
    compare,
    hellinger,
    is_drifted,
    jensenshannon,
    kl,
    ks,
    psi,
    smoothed_proportions,
    wasserstein,
)

TOL = 1e-9
Counts = NDArray[np.int64]

# Small counts make many empty bins (the epsilon rule), large ones make tiny p-values.
bin_count = st.integers(0, 3) | st.integers(0, 2_000)


@st.composite
def count_vectors(draw: st.DrawFn, min_bins: int = 1, max_bins: int = 40) -> Counts:
    k = draw(st.integers(min_bins, max_bins))
    counts = np.array(draw(st.lists(bin_count, min_size=k, max_size=k)), dtype=np.int64)
    if counts.sum() == 0:
        counts[draw(st.integers(0, k - 1))] = draw(st.integers(1, 50))
    return counts


@st.composite
def count_pairs(draw: st.DrawFn, min_bins: int = 1, max_bins: int = 40) -> tuple[Counts, Counts]:
    ref = draw(count_vectors(min_bins, max_bins))
    cur = draw(count_vectors(ref.size, ref.size))
    return ref, cur


def smooth(counts: Counts) -> NDArray[np.float64]:
    """The epsilon rule spelled out independently of the module."""
    p = counts / counts.sum()
    p = np.where(p < EPSILON, EPSILON, p)
    out: NDArray[np.float64] = p / p.sum()
    return out


def close(actual: float, expected: float) -> bool:
    return math.isclose(actual, expected, rel_tol=TOL, abs_tol=TOL)


def samples(counts: Counts) -> NDArray[np.int64]:
    """One observation per event, valued at its bin index."""
    return np.repeat(np.arange(counts.size), counts)


# --- each statistic against an independent computation ------------------------------


@settings(max_examples=100, deadline=None)
@given(count_vectors())
def test_smoothed_proportions_is_the_floored_renormalised_distribution(counts: Counts) -> None:
    p = smoothed_proportions(counts)
    np.testing.assert_allclose(p, smooth(counts), rtol=TOL, atol=0)
    assert math.isclose(p.sum(), 1.0, rel_tol=1e-12)
    assert p.min() >= EPSILON / (1 + counts.size * EPSILON) - 1e-18
    np.testing.assert_allclose(smoothed_proportions(counts.astype(np.float64)), p, rtol=0, atol=0)


@settings(max_examples=100, deadline=None)
@given(count_pairs())
def test_psi_is_the_symmetrised_relative_entropy(pair: tuple[Counts, Counts]) -> None:
    ref, cur = pair
    p, q = smooth(ref), smooth(cur)
    expected = float(rel_entr(q, p).sum() + rel_entr(p, q).sum())
    assert close(psi(ref, cur), expected)
    assert close(psi(ref, cur), float(np.sum((q - p) * np.log(q / p))))


@settings(max_examples=100, deadline=None)
@given(count_pairs())
def test_kl_is_the_entropy_of_cur_relative_to_ref(pair: tuple[Counts, Counts]) -> None:
    ref, cur = pair
    p, q = smooth(ref), smooth(cur)
    assert close(kl(ref, cur), float(stats.entropy(q, p)))
    assert close(kl(ref, cur), float(rel_entr(q, p).sum()))


@settings(max_examples=100, deadline=None)
@given(count_pairs())
def test_jensenshannon_matches_scipy_base_2(pair: tuple[Counts, Counts]) -> None:
    ref, cur = pair
    expected = float(scipy_jensenshannon(smooth(ref), smooth(cur), base=2))
    assert close(jensenshannon(ref, cur), expected)


@settings(max_examples=100, deadline=None)
@given(count_pairs())
def test_hellinger_is_the_scaled_euclidean_distance_of_root_proportions(
    pair: tuple[Counts, Counts],
) -> None:
    ref, cur = pair
    p, q = smooth(ref), smooth(cur)
    assert close(hellinger(ref, cur), euclidean(np.sqrt(p), np.sqrt(q)) / math.sqrt(2))
    assert close(hellinger(ref, cur), math.sqrt(0.5 * np.sum((np.sqrt(p) - np.sqrt(q)) ** 2)))


points_in_bins = st.lists(
    st.floats(-100, 100, allow_nan=False, allow_infinity=False), min_size=40, max_size=40
)


@settings(max_examples=100, deadline=None)
@given(count_pairs(), points_in_bins, points_in_bins, st.floats(0.01, 50))
def test_wasserstein_matches_scipy_divided_by_the_reference_std(
    pair: tuple[Counts, Counts], ref_at: list[float], cur_at: list[float], std: float
) -> None:
    ref, cur = pair
    ref_points, cur_points = np.array(ref_at[: ref.size]), np.array(cur_at[: cur.size])
    raw = stats.wasserstein_distance(ref_points, cur_points, ref, cur)
    assert close(wasserstein(ref, cur, ref_points, cur_points, std), raw / std)


@settings(max_examples=50, deadline=None)
@given(count_pairs(), points_in_bins, points_in_bins)
def test_wasserstein_ignores_the_points_of_empty_bins(
    pair: tuple[Counts, Counts], ref_at: list[float], cur_at: list[float]
) -> None:
    ref, cur = pair
    ref_points, cur_points = np.array(ref_at[: ref.size]), np.array(cur_at[: cur.size])
    raw = stats.wasserstein_distance(
        ref_points[ref > 0], cur_points[cur > 0], ref[ref > 0], cur[cur > 0]
    )
    ref_points[ref == 0] = np.nan
    cur_points[cur == 0] = np.inf
    assert close(wasserstein(ref, cur, ref_points, cur_points, 1.0), raw)


@settings(max_examples=100, deadline=None)
@given(count_pairs())
def test_ks_equals_scipy_asymptotic_ks_on_bin_indices(pair: tuple[Counts, Counts]) -> None:
    ref, cur = pair
    assume(not (ref.sum() == 1 and cur.sum() == 1))  # scipy's p-value is NaN there
    expected = stats.ks_2samp(samples(ref), samples(cur), method="asymp")
    statistic, pvalue = ks(ref, cur)
    assert close(statistic, float(expected.statistic))
    assert close(pvalue, float(expected.pvalue))


def test_ks_with_one_event_per_side_has_a_finite_pvalue() -> None:
    assert ks([0, 1], [0, 1]) == (0.0, 1.0)
    statistic, pvalue = ks([1, 0], [0, 1])
    assert statistic == 1.0
    assert 0.0 <= pvalue <= 1.0


@settings(max_examples=100, deadline=None)
@given(count_pairs())
def test_chisquare_matches_scipy_contingency_without_correction(
    pair: tuple[Counts, Counts],
) -> None:
    ref, cur = pair
    table = np.stack([ref, cur])
    table = table[:, table.sum(axis=0) > 0]
    expected = stats.chi2_contingency(table, correction=False)
    statistic, pvalue = chisquare(ref, cur)
    assert close(statistic, float(expected.statistic))
    assert close(pvalue, float(expected.pvalue))


@pytest.mark.parametrize(
    ("ref", "cur"),
    [([5, 0, 0], [3, 0, 0]), ([0, 7], [0, 1]), ([4], [9])],
)
def test_chisquare_with_fewer_than_two_filled_bins_has_nothing_to_test(
    ref: list[int], cur: list[int]
) -> None:
    assert chisquare(ref, cur) == (0.0, 1.0)


# --- binned statistics track the raw-data ones ---------------------------------------


def quantile_bins(ref: NDArray[np.float64]) -> NDArray[np.float64]:
    """~100 reference-quantile edges, the last nudged up so the reference max is interior."""
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, 101)))
    edges[-1] = np.nextafter(edges[-1], np.inf)
    return edges


def histogram(
    values: NDArray[np.float64], edges: NDArray[np.float64]
) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Counts with underflow (index 0) and overflow (last) bins, and each bin's mean value."""
    index = np.searchsorted(edges, values, side="right")
    counts = np.bincount(index, minlength=edges.size + 1)
    sums = np.bincount(index, weights=values, minlength=edges.size + 1)
    with np.errstate(invalid="ignore"):
        return counts, sums / counts


@settings(max_examples=15, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.integers(2_000, 5_000),
    st.integers(2_000, 5_000),
    st.floats(0.0, 1.0),
)
def test_binned_ks_and_wasserstein_track_the_raw_statistics(
    seed: int, n_ref: int, n_cur: int, shift: float
) -> None:
    rng = np.random.default_rng(seed)
    ref_raw, cur_raw = rng.normal(size=n_ref), rng.normal(shift, 1.0, size=n_cur)
    edges = quantile_bins(ref_raw)
    ref, ref_points = histogram(ref_raw, edges)
    cur, cur_points = histogram(cur_raw, edges)
    assert ref[0] == 0
    assert ref[-1] == 0
    std = float(ref_raw.std())

    statistic, _ = ks(ref, cur)
    assert abs(statistic - stats.ks_2samp(ref_raw, cur_raw).statistic) < 0.02
    binned = wasserstein(ref, cur, ref_points, cur_points, std)
    assert abs(binned - stats.wasserstein_distance(ref_raw, cur_raw) / std) < 0.02


# --- properties ------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(count_vectors(), st.integers(1, 5), points_in_bins)
def test_identical_distributions_do_not_drift(counts: Counts, scale: int, at: list[float]) -> None:
    points = np.array(at[: counts.size])
    for method in DISTANCES:
        score = compare(method, counts, counts * scale, ref_points=points, cur_points=points)
        assert score.score == pytest.approx(0.0, abs=1e-12), method
        assert score.pvalue is None
    assert ks(counts, counts * scale) == (0.0, 1.0)
    statistic, pvalue = chisquare(counts, counts)
    assert (statistic, pvalue) == (0.0, 1.0)


@settings(max_examples=50, deadline=None)
@given(count_pairs())
def test_symmetric_statistics_are_symmetric_and_bounded(pair: tuple[Counts, Counts]) -> None:
    ref, cur = pair
    for distance in (jensenshannon, hellinger, psi):
        assert distance(ref, cur) == pytest.approx(distance(cur, ref), rel=TOL, abs=1e-15)
    assert psi(ref, cur) == pytest.approx(kl(ref, cur) + kl(cur, ref), rel=TOL, abs=1e-15)
    assert 0.0 <= jensenshannon(ref, cur) <= 1.0
    assert 0.0 <= hellinger(ref, cur) <= 1.0
    for test in (ks, chisquare):
        assert test(ref, cur)[0] == pytest.approx(test(cur, ref)[0], rel=TOL)
        assert 0.0 <= test(ref, cur)[1] <= 1.0


def test_kl_is_not_symmetric() -> None:
    assert kl([50, 50], [90, 10]) != pytest.approx(kl([90, 10], [50, 50]))


@pytest.mark.parametrize("ref_std", [0.0, -1.0, math.nan, math.inf])
def test_wasserstein_without_a_usable_std_is_the_raw_distance(ref_std: float) -> None:
    assert wasserstein([1, 0], [0, 1], [0.0, 0.0], [0.0, 2.5], ref_std) == 2.5


@pytest.mark.parametrize("method", METHODS)
def test_compare_dispatches_to_the_statistic(method: str) -> None:
    ref, cur = np.array([30, 50, 0, 20]), np.array([10, 40, 5, 45])
    points = np.array([-1.0, 0.0, 1.0, 2.0])
    score = compare(method, ref, cur, ref_points=points, cur_points=points + 0.5, ref_std=2.0)
    assert score.method == method
    if method in TESTS:
        statistic, pvalue = {"ks": ks, "chisquare": chisquare}[method](ref, cur)
        assert (score.score, score.pvalue) == (statistic, pvalue)
    elif method == "wasserstein":
        assert score == DriftScore(method, wasserstein(ref, cur, points, points + 0.5, 2.0), None)
    else:
        distance = {"psi": psi, "kl": kl, "jensenshannon": jensenshannon, "hellinger": hellinger}
        assert score == DriftScore(method, distance[method](ref, cur), None)


@pytest.mark.parametrize(
    ("score", "threshold", "drifted"),
    [
        (DriftScore("wasserstein", 0.1, None), 0.1, True),
        (DriftScore("wasserstein", 0.0999, None), 0.1, False),
        (DriftScore("psi", 0.3, None), 0.2, True),
        (DriftScore("jensenshannon", 0.0, None), 0.1, False),
        (DriftScore("ks", 0.9, 0.049), 0.05, True),
        (DriftScore("ks", 0.9, 0.05), 0.05, False),
        (DriftScore("chisquare", 1e6, 0.5), 0.05, False),
        (DriftScore("chisquare", 0.0, 0.0), 0.05, True),
    ],
)
def test_distances_drift_at_the_threshold_and_tests_below_it(
    score: DriftScore, threshold: float, drifted: bool
) -> None:
    assert is_drifted(score, threshold) is drifted


def test_is_drifted_rejects_a_test_without_pvalue_and_unknown_methods() -> None:
    with pytest.raises(ValueError, match="ks"):
        is_drifted(DriftScore("ks", 0.5, None), 0.05)
    with pytest.raises(ValueError, match="energy"):
        is_drifted(DriftScore("energy", 0.5, None), 0.05)


def test_compare_rejects_an_unknown_method_listing_the_known_ones() -> None:
    with pytest.raises(ValueError, match="energy") as raised:
        compare("energy", [1, 2], [2, 1])
    assert all(method in str(raised.value) for method in METHODS)


def test_compare_wasserstein_needs_points() -> None:
    with pytest.raises(ValueError, match="wasserstein"):
        compare("wasserstein", [1, 2], [2, 1], ref_points=[0.0, 1.0])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("ref", "cur"), [([0, 0], [1, 2]), ([1, 2], [0, 0])])
def test_compare_rejects_an_empty_side(method: str, ref: list[int], cur: list[int]) -> None:
    points = [0.0, 1.0]
    with pytest.raises(ValueError, match="empty"):
        compare(method, ref, cur, ref_points=points, cur_points=points)


@pytest.mark.parametrize(
    ("ref", "cur"),
    [([1, 2], [1, 2, 3]), ([1, -2], [1, 2]), ([1, math.nan], [1, 2]), ([[1, 2]], [[1, 2]])],
)
def test_compare_rejects_malformed_counts(ref: list[float], cur: list[float]) -> None:
    with pytest.raises(ValueError, match="ref"):
        compare("psi", ref, cur)


def test_wasserstein_rejects_missing_points_for_filled_bins() -> None:
    with pytest.raises(ValueError, match="cur_points"):
        wasserstein([1, 1], [1, 1], [0.0, 1.0], [0.0, math.nan], 1.0)
    with pytest.raises(ValueError, match="ref_points"):
        wasserstein([1, 1], [1, 1], [0.0], [0.0, 1.0], 1.0)
