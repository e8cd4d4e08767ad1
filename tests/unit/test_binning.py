"""Numerical bin assignment through the edge grid equals numpy's binary search exactly."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.binning import NumericBins

SHAPES = ("normal", "lognormal", "integers", "cauchy", "tiny", "huge")


def reference(shape: str, rng: np.random.Generator) -> np.ndarray:
    n = 2000
    if shape == "normal":
        return rng.normal(size=n)
    if shape == "lognormal":  # a heavy tail: the grid may give way to the binary search
        return rng.lognormal(0.0, 2.0, size=n)
    if shape == "integers":
        return rng.integers(0, 5, size=n).astype(float)
    if shape == "cauchy":
        return rng.standard_cauchy(n)
    if shape == "tiny":
        return rng.uniform(-1.0, 1.0, n) * 1e-310
    return rng.normal(size=n) * 1e300


@settings(max_examples=200, deadline=None)
@given(
    shape=st.sampled_from(SHAPES),
    quantiles=st.sampled_from([10, 100, 1000]),
    seed=st.integers(0, 2**32 - 1),
)
def test_assign_equals_searchsorted(shape: str, quantiles: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref = reference(shape, rng)
    bins = NumericBins.from_values(ref, quantiles, 10)
    e = bins.edges
    x = np.concatenate(
        [
            rng.choice(ref, 500),
            rng.normal(size=100) * 10.0 ** rng.uniform(-300, 300, 100),
            e,
            np.nextafter(e, -np.inf),
            np.nextafter(e, np.inf),
            [np.inf, -np.inf, 1.7e308, -1.7e308, 0.0, -0.0, 5e-324, -5e-324],
        ]
    )
    expected = np.searchsorted(e, x, side="right")
    assert bins.assign(x).tolist() == expected.tolist()
    with_nan = np.append(x, np.nan)  # NaN goes to the overflow, as the binary search puts it
    assert bins.assign(with_nan).tolist() == np.searchsorted(e, with_nan, side="right").tolist()


def test_the_grid_serves_an_ordinary_feature() -> None:
    bins = NumericBins.from_values(np.random.default_rng(0).normal(size=5000), 100, 10)
    assert bins._grid is not None  # the fast path is the one tested above
    assert NumericBins.from_dict(bins.to_dict()).to_dict() == bins.to_dict()  # not stored
