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
grid of window sizes from 100 to 1 000 000. For each grid size the score is first put on
a scale on which it hardly depends on ``n``: with ``n_eff = n m / (n + m)``,
``z = n_eff * score`` for PSI and KL (which behave like chi-square / ``n_eff``) and
``z = n_eff * score ** 2`` for the others (which shrink like ``1 / sqrt(n_eff)``). The
table keeps the 80%, 90% and 95% quantiles of ``z`` and, beyond the 95% quantile, the
mean excess of ``z``: a chi-square-like tail decays exponentially, so the ``1 - alpha``
quantile for a small ``alpha`` is ``z95 + excess * ln(0.05 / alpha)``. A threshold for
any ``n`` interpolates the table linearly in ``log n`` and takes microseconds.

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
#: draws per grid size: enough for the 95% quantile and a tail fit on 100 exceedances
DRAWS = 2000
#: methods whose score shrinks like 1 / n_eff (the others like 1 / sqrt(n_eff))
_LINEAR = frozenset({"psi", "kl"})


def _n_eff(n: float, m: float) -> float:
    return n * m / (n + m)


@dataclass(frozen=True)
class NullTable:
    """The simulated null distribution of one feature's scores, per method.

    ``quantiles[method]`` has one row per :data:`GRID` size and one column per
    :data:`TAIL_PROBS`; ``excess[method]`` one mean excess per grid size.
    """

    m: int
    quantiles: Mapping[str, NDArray[np.float64]]
    excess: Mapping[str, NDArray[np.float64]]

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(self.quantiles)

    def threshold(self, method: str, n: int, alpha: float) -> float:
        """The score a window of ``n`` values exceeds with probability ``alpha`` by chance.

        Sizes outside the grid take the nearest grid size's scaled quantiles.
        """
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        q, ex = self.quantiles[method], self.excess[method]
        x = math.log(max(n, 1))
        grid = _LOG_GRID
        zq = [float(np.interp(x, grid, q[:, j])) for j in range(len(TAIL_PROBS))]
        if alpha >= TAIL_PROBS[-1]:
            # between stored quantiles: linear in log(alpha); above the first: the first
            a = min(alpha, TAIL_PROBS[0])
            z = float(np.interp(-math.log(a), [-math.log(t) for t in TAIL_PROBS], zq))
        else:
            z = zq[-1] + float(np.interp(x, grid, ex)) * math.log(TAIL_PROBS[-1] / alpha)
        scaled = max(z, 0.0) / _n_eff(max(n, 1), self.m)
        return scaled if method in _LINEAR else math.sqrt(scaled)

    def to_dict(self) -> dict[str, Any]:
        return {
            "m": self.m,
            "grid": list(GRID),
            "tail_probs": list(TAIL_PROBS),
            "quantiles": {k: v.tolist() for k, v in self.quantiles.items()},
            "excess": {k: v.tolist() for k, v in self.excess.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NullTable | None:
        """The table, or ``None`` when it was computed on another grid (recompute it)."""
        if list(data.get("grid", ())) != list(GRID):
            return None
        if list(data.get("tail_probs", ())) != list(TAIL_PROBS):
            return None
        quantiles = {str(k): np.asarray(v, dtype=np.float64) for k, v in data["quantiles"].items()}
        excess = {str(k): np.asarray(v, dtype=np.float64) for k, v in data["excess"].items()}
        for k, v in quantiles.items():
            if v.shape != (len(GRID), len(TAIL_PROBS)) or excess.get(k, v).shape != (len(GRID),):
                raise ValueError(f"null table for {k!r} has the wrong shape")
        return cls(int(data["m"]), quantiles, excess)


_LOG_GRID = np.log(np.asarray(GRID, dtype=np.float64))


def simulate_null(
    counts: NDArray[np.int64],
    coarse_starts: NDArray[np.intp],
    methods: Sequence[str],
    *,
    points: NDArray[np.float64] | None = None,
    outer: tuple[tuple[float, float], tuple[float, float]] | None = None,
    std: float = 1.0,
    draws: int = DRAWS,
) -> NullTable:
    """Simulate the null distribution of each distance in ``methods`` (tests excluded: they
    have p-values) for a feature with reference ``counts`` per value bin.

    ``coarse_starts`` groups the bins as the coarse methods see them. ``wasserstein``
    (fine bins) needs the ``points`` where each bin's mass sits and, for numerical bins,
    the ranges ``outer`` a window's values below and above the reference range are
    placed in (see :func:`monitor.model_state.wasserstein_points`); it divides by ``std``
    as the live score does.

    The window side gives each outer bin the chance ``1 / (m + 2)`` that a new value falls
    below (above) all ``m`` reference values, which they have by exchangeability.
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
    p_cur = p
    if outer is not None:
        p_cur = p * m / (m + 2)
        p_cur[0] += 1 / (m + 2)
        p_cur[-1] += 1 / (m + 2)
    ref = rng.multinomial(m, p, size=draws).astype(np.float64)
    ref_coarse = np.add.reduceat(ref, coarse_starts, axis=-1)
    scale = std if math.isfinite(std) and std > 0 else 1.0
    zs: dict[str, list[NDArray[np.float64]]] = {x: [] for x in wanted}
    for n in GRID:
        cur = rng.multinomial(n, p_cur, size=draws).astype(np.float64)
        cur_coarse = np.add.reduceat(cur, coarse_starts, axis=-1)
        n_eff = _n_eff(n, m)
        for method in wanted:
            if method == "wasserstein":
                assert points is not None
                at = np.array(np.broadcast_to(points, ref.shape))
                if outer is not None:
                    for j, (lo, hi) in ((0, outer[0]), (-1, outer[1])):
                        at[:, j] = rng.uniform(lo, hi, size=draws)
                score = wasserstein_fixed(ref, cur, at) / scale
            else:
                score = rows(method, ref_coarse, cur_coarse)
            zs[method].append(n_eff * score if method in _LINEAR else n_eff * score**2)
    quantiles, excess = {}, {}
    for method, per_size in zs.items():
        z = np.stack(per_size)  # (grid, draws)
        q = np.quantile(z, [1 - t for t in TAIL_PROBS], axis=1).T
        top = q[:, -1:]
        over = z > top
        mean_excess = np.sum(np.where(over, z - top, 0.0), axis=1) / np.maximum(over.sum(1), 1)
        quantiles[method], excess[method] = q, mean_excess
    return NullTable(m, quantiles, excess)


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
