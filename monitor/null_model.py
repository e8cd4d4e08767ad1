"""Calibrated drift thresholds: how large a score gets when nothing has drifted.

A distance between a live window and the reference is never 0 without drift: both are
samples. How large it gets by chance depends on the window's size ``n``, the reference's
size ``m`` and the shape of the feature, so a fixed threshold flags nearly every small
window and misses real moves in large ones. Instead, the threshold of a window is the
``1 - alpha`` quantile of the score's *null distribution* for that ``n`` and ``m``.

The null distribution is simulated once per feature, from the reference itself: both
sides are drawn from the reference's bin probabilities (multinomial draws of ``m`` and of
``n`` values, a parametric bootstrap). Every score is a function of the bin counts (and,
for Wasserstein, of fixed points per bin), so the simulation needs no model of the
values inside a bin and holds whatever the feature's shape. It is simulated on a
grid of window sizes from 100 to 100 000. For each grid size the score is first put on
a scale on which it hardly depends on ``n``: with ``n_eff = n m / (n + m)``,
``z = n_eff * score`` for PSI and KL (which behave like chi-square / ``n_eff``) and
``z = n_eff * score ** 2`` for the others (which shrink like ``1 / sqrt(n_eff)``).

The table keeps the 80%, 90% and 95% quantiles of ``z`` and, beyond the 95% quantile, a
generalized Pareto fit of the excess of ``z`` over its 95% quantile (scale and shape by
the method of moments, on the 400 of 8 000 draws beyond it): the ``1 - alpha`` quantile
for a small ``alpha`` is ``z95 + scale / shape * ((0.05 / alpha) ** shape - 1)``, which is
exponential for a chi-square-like tail (shape 0) and heavier where a few values far out
dominate (heavy tails, skew, small windows). The shape is never taken below 0: a negative
shape is a tail that ends, and 400 draws cannot show where; a bound guessed too low would
be passed by chance far more often than ``alpha``. A model's features are judged far out
in that tail (``4e-4`` each for 25 features at a 1% budget): with 2 000 draws the fit's
own noise left some features' thresholds too low and a 25-feature model flagged 1.4 to 2
times its budget; 8 000 draws keep it near the budget (``bench/calibration.py``). A
threshold for any ``n`` interpolates the table linearly in ``log n`` and takes microseconds.

The simulation is seeded from the feature's own reference counts, so every instance of a
fleet computes the same table from the same reference.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from monitor.drift import DISTANCES, rows

__all__ = ["GRID", "TAIL_PROBS", "NullTable", "simulate_null", "wasserstein_fixed"]

#: window sizes (values of the feature) the null distribution is simulated at; beyond the
#: last, n_eff is close to m and the scaled quantiles no longer move
GRID: tuple[int, ...] = tuple(round(100 * 10 ** (i / 2)) for i in range(7))
#: upper-tail probabilities whose quantiles are kept; below the last, the tail is fitted
TAIL_PROBS: tuple[float, ...] = (0.2, 0.1, 0.05)
#: draws per grid size: the 95% quantile and a tail fit on 400 exceedances
DRAWS = 8000
#: methods whose score shrinks like 1 / n_eff (the others like 1 / sqrt(n_eff))
_LINEAR = frozenset({"psi", "kl"})


def _n_eff(n: float, m: float) -> float:
    return n * m / (n + m)


@dataclass(frozen=True)
class NullTable:
    """The simulated null distribution of one feature's scores, per method.

    ``quantiles[method]`` has one row per :data:`GRID` size and one column per
    :data:`TAIL_PROBS`; ``tail[method]`` the (scale, shape) of the generalized Pareto fit
    of the excess over the last quantile, one row per grid size.
    """

    m: int
    quantiles: Mapping[str, NDArray[np.float64]]
    tail: Mapping[str, NDArray[np.float64]]

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.quantiles)

    def threshold(self, method: str, n: int, alpha: float) -> float:
        """The score a window of ``n`` values exceeds with probability ``alpha`` by chance.

        Sizes outside the grid take the nearest grid size's scaled quantiles.
        """
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        q, tail = self.quantiles[method], self.tail[method]
        x = math.log(max(n, 1))
        grid = _LOG_GRID
        zq = [float(np.interp(x, grid, q[:, j])) for j in range(len(TAIL_PROBS))]
        if alpha >= TAIL_PROBS[-1]:
            # between stored quantiles: linear in log(alpha); above the first: the first
            a = min(alpha, TAIL_PROBS[0])
            z = float(np.interp(-math.log(a), [-math.log(t) for t in TAIL_PROBS], zq))
        else:
            scale = float(np.interp(x, grid, tail[:, 0]))
            shape = float(np.interp(x, grid, tail[:, 1]))
            ratio = TAIL_PROBS[-1] / alpha
            if abs(shape) < 1e-6:
                z = zq[-1] + scale * math.log(ratio)
            else:
                z = zq[-1] + scale / shape * (ratio**shape - 1)
        scaled = max(z, 0.0) / _n_eff(max(n, 1), self.m)
        return scaled if method in _LINEAR else math.sqrt(scaled)

    def to_dict(self) -> dict[str, Any]:
        return {
            "m": self.m,
            "grid": list(GRID),
            "tail_probs": list(TAIL_PROBS),
            "draws": DRAWS,
            "quantiles": {k: v.tolist() for k, v in self.quantiles.items()},
            "tail": {k: v.tolist() for k, v in self.tail.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NullTable | None:
        """The table, or ``None`` when it was computed on another grid or with another
        number of draws (recompute it)."""
        if list(data.get("grid", ())) != list(GRID) or data.get("draws") != DRAWS:
            return None
        if list(data.get("tail_probs", ())) != list(TAIL_PROBS):
            return None
        if "tail" not in data:  # written with an older tail model
            return None
        quantiles = {str(k): np.asarray(v, dtype=np.float64) for k, v in data["quantiles"].items()}
        tail = {str(k): np.asarray(v, dtype=np.float64) for k, v in data["tail"].items()}
        for k, v in quantiles.items():
            if v.shape != (len(GRID), len(TAIL_PROBS)) or tail.get(k, v).shape != (len(GRID), 2):
                raise ValueError(f"null table for {k!r} has the wrong shape")
        return cls(int(data["m"]), quantiles, tail)


_LOG_GRID = np.log(np.asarray(GRID, dtype=np.float64))


def simulate_null(
    counts: NDArray[np.int64],
    coarse_starts: NDArray[np.intp],
    methods: Sequence[str],
    *,
    points: NDArray[np.float64] | None = None,
    std: float = 1.0,
    draws: int = DRAWS,
) -> NullTable:
    """Simulate the null distribution of each distance in ``methods`` (tests excluded: they
    have p-values) for a feature with reference ``counts`` per value bin.

    ``coarse_starts`` groups the bins as the coarse methods see them. ``wasserstein``
    (fine bins) needs the ``points`` where each bin's mass sits on both sides (see
    :meth:`monitor.reference.FeatureProfile.wasserstein_points`) and divides by ``std`` as
    the live score does.
    """
    counts = np.asarray(counts, dtype=np.int64)
    m = int(counts.sum())
    if m <= 0:
        raise ValueError("the reference has no values to simulate from")
    wanted = [x for x in dict.fromkeys(methods) if x in DISTANCES]
    if "wasserstein" in wanted and points is None:
        raise ValueError("wasserstein needs the points of the bins")
    seed = int.from_bytes(hashlib.sha256(counts.tobytes()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    p = counts / m
    ref = rng.multinomial(m, p, size=draws).astype(np.float64)
    ref_coarse = np.add.reduceat(ref, coarse_starts, axis=-1)
    scale = std if math.isfinite(std) and std > 0 else 1.0
    zs: dict[str, list[NDArray[np.float64]]] = {x: [] for x in wanted}
    for n in GRID:
        cur = rng.multinomial(n, p, size=draws).astype(np.float64)
        cur_coarse = np.add.reduceat(cur, coarse_starts, axis=-1)
        n_eff = _n_eff(n, m)
        for method in wanted:
            if method == "wasserstein":
                assert points is not None
                at = np.broadcast_to(points, ref.shape)
                score = wasserstein_fixed(ref, cur, at) / scale
            else:
                score = rows(method, ref_coarse, cur_coarse)
            zs[method].append(n_eff * score if method in _LINEAR else n_eff * score**2)
    quantiles, tail = {}, {}
    for method, per_size in zs.items():
        z = np.stack(per_size)  # (grid, draws)
        q = np.quantile(z, [1 - t for t in TAIL_PROBS], axis=1).T
        quantiles[method] = q
        tail[method] = np.array(
            [_pareto(row[row > top] - top) for row, top in zip(z, q[:, -1], strict=True)]
        )
    return NullTable(m, quantiles, tail)


def _pareto(excess: NDArray[np.float64]) -> tuple[float, float]:
    """(scale, shape) of a generalized Pareto law fitted to ``excess`` by the method of
    moments; shape 0 is the exponential law, and the shape is kept within [0, 0.5] (a
    tail is never assumed to end)."""
    if excess.size < 10:
        return (float(excess.mean()) if excess.size else 0.0), 0.0
    mean, var = float(excess.mean()), float(excess.var(ddof=1))
    if var <= 0:
        return mean, 0.0
    ratio = mean * mean / var
    shape = min(max(0.5 * (1 - ratio), 0.0), 0.5)
    return mean * (1 - shape), shape


def wasserstein_fixed(
    ref: NDArray[np.float64], cur: NDArray[np.float64], at: NDArray[np.float64]
) -> NDArray[np.float64]:
    """:func:`monitor.drift.wasserstein` (undivided) of each row pair when both sides put a
    bin's mass at the same increasing points ``at``: the integral of ``|F_ref - F_cur|``
    is then a sum over the gaps between consecutive points.

    >>> wasserstein_fixed(np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]]), np.array([[0.0, 3.0]]))
    array([3.])
    """
    gap = np.diff(at, axis=-1)
    r = np.cumsum(ref, axis=-1)[..., :-1] / ref.sum(axis=-1, keepdims=True)
    c = np.cumsum(cur, axis=-1)[..., :-1] / cur.sum(axis=-1, keepdims=True)
    out: NDArray[np.float64] = np.sum(np.abs(r - c) * gap, axis=-1)
    return out
