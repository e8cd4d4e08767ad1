"""Drift statistics on count vectors: how far the live window has moved from the reference.

Every statistic takes two *count vectors* of the same length, one count per ordered bin of
the reference (index 0 may be an underflow bin and the last an overflow bin). Bins never
depend on the live window, so the reference is binned once and each window is just counts.

Epsilon rule (the only one, shared by every distance): ``psi``, ``kl`` and the other
distances are infinite or undefined when a bin is empty on one side, so each count vector
is turned into proportions ``p = counts / counts.sum()``, floored at ``EPSILON`` (1e-4, the
floor Evidently uses) and renormalised, ``p = max(p, EPSILON); p /= p.sum()``. Flooring
then renormalising keeps a proper probability distribution, so identical inputs still give
exactly 0 and symmetric distances stay symmetric. See :func:`smoothed_proportions`.

The two tests (``ks``, ``chisquare``) and ``wasserstein`` work on the raw counts: they are
finite on empty bins, and smoothing would bias their statistics.

>>> ref = [10, 40, 40, 10]
>>> compare("psi", ref, ref)
DriftScore(method='psi', score=0.0, pvalue=None)
>>> is_drifted(compare("jensenshannon", ref, [40, 40, 10, 10]), threshold=0.1)
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

__all__ = [
    "DEFAULT_MIN_EFFECT",
    "DISTANCES",
    "EPSILON",
    "METHODS",
    "SQUARED",
    "TESTS",
    "DriftScore",
    "chisquare",
    "compare",
    "hellinger",
    "is_drifted",
    "jensenshannon",
    "kl",
    "ks",
    "psi",
    "rows",
    "smoothed_proportions",
    "terms",
    "wasserstein",
    "wasserstein_terms",
]

EPSILON: float = 1e-4
"""Floor on every proportion before a distance is taken (see the module docstring)."""

DISTANCES: tuple[str, ...] = ("psi", "kl", "jensenshannon", "hellinger", "wasserstein")
TESTS: tuple[str, ...] = ("ks", "chisquare")
METHODS: tuple[str, ...] = DISTANCES + TESTS
#: distances whose per-bin :func:`terms` add up to their square
SQUARED: tuple[str, ...] = ("jensenshannon", "hellinger")

#: the smallest score that counts as drift however significant it is, so that a window of
#: 100 000 events does not alarm on a negligible move. Each is about half the score of the
#: smallest move worth an alert (a 0.1-std mean shift of a numerical feature, a 5-point
#: share move of a category): see the power table in the README. Tests have no effect
#: size but KS's D; chi-square's statistic grows with n, so its minimum is 0.
DEFAULT_MIN_EFFECT: dict[str, float] = {
    "psi": 0.005,
    "kl": 0.0025,
    "jensenshannon": 0.02,
    "hellinger": 0.02,
    "wasserstein": 0.05,
    "ks": 0.02,
    "chisquare": 0.0,
}


@dataclass(frozen=True)
class DriftScore:
    """One method's verdict material: a distance, or a test statistic with its p-value.

    ``score`` is the distance for :data:`DISTANCES` and the test statistic for
    :data:`TESTS`; ``pvalue`` is ``None`` for distances.
    """

    method: str
    score: float
    pvalue: float | None


def _counts(counts: ArrayLike, name: str) -> NDArray[np.float64]:
    """``counts`` as a 1-D float vector of non-negative finite counts with a positive sum."""
    arr = np.asarray(counts, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D count vector, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"{name} must hold finite non-negative counts")
    if arr.sum() <= 0:
        raise ValueError(f"{name} is empty (its counts sum to 0)")
    return arr


def _pair(ref: ArrayLike, cur: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    r, c = _counts(ref, "ref"), _counts(cur, "cur")
    if r.shape != c.shape:
        raise ValueError(f"ref and cur must have the same bins, got {r.size} and {c.size}")
    return r, c


def smoothed_proportions(counts: NDArray[np.float64] | NDArray[np.int64]) -> NDArray[np.float64]:
    """Proportions floored at :data:`EPSILON` and renormalised: the one epsilon rule.

    >>> p = smoothed_proportions(np.array([0, 1, 3]))
    >>> p.round(4).tolist()
    [0.0001, 0.25, 0.7499]
    >>> float(p.sum()), bool(p[0] < EPSILON)  # renormalising moves the floor a little
    (1.0, True)
    """
    arr = _counts(counts, "counts")
    p = np.maximum(arr / arr.sum(), EPSILON)
    out: NDArray[np.float64] = p / p.sum()
    return out


def _smoothed_rows(counts: NDArray[np.float64]) -> NDArray[np.float64]:
    """:func:`smoothed_proportions` of each row of a matrix of count vectors."""
    p = np.maximum(counts / counts.sum(axis=-1, keepdims=True), EPSILON)
    out: NDArray[np.float64] = p / p.sum(axis=-1, keepdims=True)
    return out


def terms(method: str, ref: NDArray[np.float64], cur: NDArray[np.float64]) -> NDArray[np.float64]:
    """Per-bin terms of ``method`` for each row pair of two count matrices (last axis: bins),
    with no validation: the one place these formulas are written. :func:`rows` reduces
    them to the statistic, and the explanation of a verdict reads them bin by bin.

    The terms add up to the statistic for ``psi``, ``kl`` and ``chisquare``, to the square
    of the distance for ``jensenshannon`` (the divergence, in bits) and ``hellinger``; for
    ``ks`` they are each bin's ``|F_ref - F_cur|`` at its upper edge, whose maximum is
    ``D``. ``chisquare``'s terms are the 2 x k table's ``(O - E)^2 / E`` summed over the
    two rows, 0 for a bin empty on both sides.

    >>> ref, cur = np.array([50.0, 50.0]), np.array([90.0, 10.0])
    >>> terms("psi", ref, cur).round(6).tolist()
    [0.235115, 0.643775]
    >>> round(float(terms("chisquare", ref, cur).sum()), 6)  # 2 x 2 table: (O - E)^2 / E
    38.095238
    """
    return _scaled(method, _raw_terms(method, ref, cur))


def _scaled(method: str, x: NDArray[np.float64]) -> NDArray[np.float64]:
    """A method's constant factor, applied to its terms or (in :func:`rows`) to their sum."""
    if method == "jensenshannon":
        out: NDArray[np.float64] = x / (2 * math.log(2))
        return out
    if method == "hellinger":
        return 0.5 * x
    return x


def _raw_terms(
    method: str, ref: NDArray[np.float64], cur: NDArray[np.float64]
) -> NDArray[np.float64]:
    if method == "ks":
        r = np.cumsum(ref, axis=-1) / ref.sum(axis=-1, keepdims=True)
        c = np.cumsum(cur, axis=-1) / cur.sum(axis=-1, keepdims=True)
        gaps: NDArray[np.float64] = np.abs(r - c)
        return gaps
    if method == "chisquare":
        observed = np.stack([ref, cur], axis=-2)
        expected = (
            observed.sum(axis=-1, keepdims=True)
            * observed.sum(axis=-2, keepdims=True)
            / observed.sum(axis=(-2, -1), keepdims=True)
        )
        with np.errstate(invalid="ignore", divide="ignore"):
            cells = np.where(expected > 0, (observed - expected) ** 2 / expected, 0.0)
        chi: NDArray[np.float64] = cells.sum(axis=-2)
        return chi
    p, q = _smoothed_rows(ref), _smoothed_rows(cur)
    if method == "psi":
        out: NDArray[np.float64] = (q - p) * np.log(q / p)
    elif method == "kl":
        out = q * np.log(q / p)
    elif method == "jensenshannon":
        m = (p + q) / 2
        out = p * np.log(p / m) + q * np.log(q / m)
    elif method == "hellinger":
        out = (np.sqrt(p) - np.sqrt(q)) ** 2
    else:
        raise ValueError(f"{method!r} has no per-bin terms")
    return out


def rows(method: str, ref: NDArray[np.float64], cur: NDArray[np.float64]) -> NDArray[np.float64]:
    """A distance (``psi``, ``kl``, ``jensenshannon``, ``hellinger``) or KS's ``D`` of each
    row pair of two count matrices (last axis: bins), with no validation: the
    :func:`terms` of each row reduced, used by the scalar functions and by the null
    simulation.

    >>> ref, cur = np.array([[50.0, 50.0], [50.0, 50.0]]), np.array([[90.0, 10.0], [50.0, 50.0]])
    >>> rows("psi", ref, cur).round(6).tolist()
    [0.87889, 0.0]
    """
    if method not in ("ks", *SQUARED, "psi", "kl"):
        raise ValueError(f"{method!r} has no row form")
    t = _raw_terms(method, ref, cur)
    if method == "ks":
        d: NDArray[np.float64] = np.max(t, axis=-1)
        return d
    total = _scaled(method, np.sum(t, axis=-1))
    if method in SQUARED:
        # Rounding can push a near-zero divergence just below 0.
        root: NDArray[np.float64] = np.sqrt(np.maximum(total, 0.0))
        return root
    out: NDArray[np.float64] = total
    return out


def psi(ref: ArrayLike, cur: ArrayLike) -> float:
    """Population stability index ``sum((q - p) * ln(q / p))``, p = ref, q = cur, smoothed.

    >>> round(psi([50, 50], [90, 10]), 6)
    0.87889
    """
    return float(rows("psi", *_pair(ref, cur)))


def kl(ref: ArrayLike, cur: ArrayLike) -> float:
    """Kullback-Leibler divergence ``KL(cur || ref) = sum(q * ln(q / p))`` in nats, smoothed.

    >>> round(kl([50, 50], [90, 10]), 6)
    0.368064
    """
    return float(rows("kl", *_pair(ref, cur)))


def jensenshannon(ref: ArrayLike, cur: ArrayLike) -> float:
    """Jensen-Shannon *distance* in base 2 (0..1), on smoothed proportions.

    ``sqrt((KL(p || m) + KL(q || m)) / 2 / ln 2)`` with ``m = (p + q) / 2``, the same
    value as ``scipy.spatial.distance.jensenshannon(p, q, base=2)``.

    >>> round(jensenshannon([50, 50], [90, 10]), 6)
    0.383136
    >>> jensenshannon([1, 0], [0, 1]) > 0.99
    True
    """
    return float(rows("jensenshannon", *_pair(ref, cur)))


def hellinger(ref: ArrayLike, cur: ArrayLike) -> float:
    """Hellinger distance ``sqrt(0.5 * sum((sqrt(p) - sqrt(q)) ** 2))`` (0..1), smoothed.

    >>> round(hellinger([50, 50], [90, 10]), 6)
    0.32492
    """
    return float(rows("hellinger", *_pair(ref, cur)))


def _support(
    counts: NDArray[np.float64], points: ArrayLike, name: str
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Locations and probability masses of the non-empty bins."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape != counts.shape:
        raise ValueError(f"{name} must have one point per bin, got {pts.size} for {counts.size}")
    filled = counts > 0
    located = pts[filled]
    if not np.all(np.isfinite(located)):
        raise ValueError(f"{name} must be finite wherever the bin is not empty")
    mass = counts[filled]
    return located, mass / mass.sum()


def wasserstein(
    ref: ArrayLike,
    cur: ArrayLike,
    ref_points: ArrayLike,
    cur_points: ArrayLike,
    ref_std: float,
) -> float:
    """Wasserstein-1 distance between the binned distributions, divided by ``ref_std``.

    Reference mass ``ref[i]`` sits at ``ref_points[i]`` and window mass ``cur[i]`` at
    ``cur_points[i]`` (each bin's mean value); points of empty bins are ignored. The
    distance is ``integral |F_ref(x) - F_cur(x)| dx`` over the union of support points.
    Dividing by the reference standard deviation (as Evidently does) makes it unit-free;
    when ``ref_std`` is not a positive finite number the raw distance is returned.

    >>> wasserstein([1, 1], [1, 1], [0.0, 1.0], [1.0, 2.0], ref_std=0.5)
    2.0
    >>> wasserstein([1, 0], [0, 1], [0.0, float("nan")], [9.0, 3.0], ref_std=0.0)
    3.0
    """
    r, c = _pair(ref, cur)
    _, areas = _w1_areas(r, c, ref_points, cur_points)
    distance = float(np.sum(areas))
    if math.isfinite(ref_std) and ref_std > 0:
        return distance / ref_std
    return distance


def _w1_areas(
    r: NDArray[np.float64], c: NDArray[np.float64], ref_points: ArrayLike, cur_points: ArrayLike
) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """``|F_ref - F_cur|`` times the gap to the next support point, for each support point
    of either side in increasing order, and the bin each point belongs to: the one place
    the Wasserstein integral is written."""
    r_at, r_mass = _support(r, ref_points, "ref_points")
    c_at, c_mass = _support(c, cur_points, "cur_points")
    at = np.concatenate([r_at, c_at])
    bins = np.concatenate([np.flatnonzero(r > 0), np.flatnonzero(c > 0)])
    order = np.argsort(at, kind="stable")
    # Each CDF is a step function that only moves at its own support points.
    r_cdf = np.cumsum(np.concatenate([r_mass, np.zeros_like(c_mass)])[order])
    c_cdf = np.cumsum(np.concatenate([np.zeros_like(r_mass), c_mass])[order])
    areas: NDArray[np.float64] = np.abs(r_cdf - c_cdf)[:-1] * np.diff(at[order])
    return bins[order][:-1], areas


def wasserstein_terms(
    ref: ArrayLike,
    cur: ArrayLike,
    ref_points: ArrayLike,
    cur_points: ArrayLike,
    ref_std: float,
) -> NDArray[np.float64]:
    """:func:`wasserstein` split by bin: the area between the two CDFs from each bin's
    point to the next support point, over ``ref_std``; the terms add up to the distance.

    >>> points = [0.0, 1.0, 3.0]
    >>> wasserstein_terms([2, 1, 1], [1, 1, 2], points, points, ref_std=1.0).tolist()
    [0.25, 0.5, 0.0]
    """
    r, c = _pair(ref, cur)
    bins, areas = _w1_areas(r, c, ref_points, cur_points)
    out = np.bincount(bins, weights=areas, minlength=r.size).astype(np.float64)
    if math.isfinite(ref_std) and ref_std > 0:
        return out / ref_std
    return out


def ks(ref: ArrayLike, cur: ArrayLike) -> tuple[float, float]:
    """Binned two-sample Kolmogorov-Smirnov test: statistic ``D`` and p-value.

    ``D = max |F_ref - F_cur|`` over bin boundaries, from unsmoothed cumulative
    proportions; this equals ``scipy.stats.ks_2samp`` on the samples' bin indices. The
    p-value is scipy's asymptotic two-sided one (``ks_2samp(method="asymp")``):
    ``kstwo.sf(D, round(n * m / (n + m)))`` with ``n = ref.sum()``, ``m = cur.sum()``. The
    one deviation: when both sides hold a single event that effective size rounds to 0
    (scipy returns NaN), so it is floored at 1.

    >>> ks([10, 10, 10], [10, 10, 10])
    (0.0, 1.0)
    >>> d, p = ks([100, 0], [0, 100])
    >>> d, p < 1e-50
    (1.0, True)
    """
    r, c = _pair(ref, cur)
    n, m = float(r.sum()), float(c.sum())
    d = float(rows("ks", r, c))
    big, small = max(n, m), min(n, m)
    effective = max(float(np.round(big * small / (big + small))), 1.0)
    pvalue = float(np.clip(stats.kstwo.sf(d, effective), 0.0, 1.0))
    return d, pvalue


def chisquare(ref: ArrayLike, cur: ArrayLike) -> tuple[float, float]:
    """Chi-square test of homogeneity on the 2 x k table (ref, cur): statistic and p-value.

    Bins empty on both sides are dropped, there is no Yates correction, and the p-value
    is ``chi2.sf(statistic, k - 1)`` for the k remaining bins; with fewer than 2 bins left
    there is nothing to compare and the result is ``(0.0, 1.0)``.

    >>> chisquare([10, 20, 0], [10, 20, 0])
    (0.0, 1.0)
    >>> stat, p = chisquare([30, 10], [10, 30])
    >>> round(stat, 6), round(p, 6)
    (20.0, 8e-06)
    """
    r, c = _pair(ref, cur)
    bins = int(np.count_nonzero((r + c) > 0))
    if bins < 2:
        return 0.0, 1.0
    statistic = float(np.sum(terms("chisquare", r, c)))
    return statistic, float(stats.chi2.sf(statistic, bins - 1))


def compare(
    method: str,
    ref: ArrayLike,
    cur: ArrayLike,
    *,
    ref_points: ArrayLike | None = None,
    cur_points: ArrayLike | None = None,
    ref_std: float = 1.0,
) -> DriftScore:
    """Score ``cur`` against ``ref`` with one of :data:`METHODS`.

    ``wasserstein`` needs ``ref_points`` and ``cur_points``; the other methods ignore
    them. An empty ``ref`` or ``cur`` (sum 0) raises ``ValueError``.

    >>> compare("chisquare", [10, 20], [10, 20])
    DriftScore(method='chisquare', score=0.0, pvalue=1.0)
    >>> compare("wasserstein", [1], [1])
    Traceback (most recent call last):
    ...
    ValueError: wasserstein needs ref_points and cur_points
    """
    if method not in METHODS:
        raise ValueError(f"unknown drift method {method!r}; expected one of {METHODS}")
    if method == "wasserstein":
        if ref_points is None or cur_points is None:
            raise ValueError("wasserstein needs ref_points and cur_points")
        return DriftScore(method, wasserstein(ref, cur, ref_points, cur_points, ref_std), None)
    if method == "ks":
        return DriftScore(method, *ks(ref, cur))
    if method == "chisquare":
        return DriftScore(method, *chisquare(ref, cur))
    distance = {"psi": psi, "kl": kl, "jensenshannon": jensenshannon, "hellinger": hellinger}
    return DriftScore(method, distance[method](ref, cur), None)


def is_drifted(score: DriftScore, threshold: float) -> bool:
    """A distance drifts when ``score >= threshold``; a test when ``pvalue < threshold``.

    >>> is_drifted(DriftScore("psi", 0.2, None), threshold=0.2)
    True
    >>> is_drifted(DriftScore("ks", 0.3, 0.05), threshold=0.05)
    False
    """
    if score.method in TESTS:
        if score.pvalue is None:
            raise ValueError(f"{score.method} is a test and needs a p-value")
        return score.pvalue < threshold
    if score.method in DISTANCES:
        return score.score >= threshold
    raise ValueError(f"unknown drift method {score.method!r}; expected one of {METHODS}")
