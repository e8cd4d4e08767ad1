"""A monotone map from a binary classifier's score to the probability that its label is
the positive class, fitted on the labelled reference.

Estimated performance (:class:`~monitor.performance.ExpectedPerformance`) takes each
score as the probability of a positive. Most models' scores are not that: an overconfident
model's 0.9 may be right 75% of the time. The reference, where both the score and the
label are known, shows what each score is worth: the fraction of positives among the
reference rows with about that score, made non-decreasing in the score (isotonic
regression). The map is stored as knots, increasing scores and their probabilities,
read between knots by linear interpolation and beyond the outer knots as the outer
probability.

The fit pools the reference's distinct scores into at most :data:`MAX_KNOTS` groups of
about equal size (a knot is a group's mean score and its isotonic probability), and keeps
of a run of knots with one probability only its ends, so the map is small and the same
reference always gives the same knots.

>>> rng = np.random.default_rng(0)
>>> x = rng.normal(size=5000)
>>> y = rng.random(5000) < 1 / (1 + np.exp(-x))  # P(y | x) = sigmoid(x)
>>> score = 1 / (1 + np.exp(-2 * x))  # an overconfident model
>>> cal = fit_calibration(score, y)
>>> assert isinstance(cal, ScoreCalibration)
>>> [round(float(p), 1) for p in cal.apply(np.array([0.05, 0.5, 0.95]))]
[0.2, 0.5, 0.8]
>>> fit_calibration(score[:50], y[:50])
'only 50 labelled reference rows with a score (calibration needs 100)'
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import isotonic_regression

from monitor.exceptions import ReferenceError

__all__ = ["MAX_KNOTS", "MIN_ROWS", "ScoreCalibration", "fit_calibration"]

#: Fewest labelled reference rows (with a score) a calibration is fitted on.
MIN_ROWS = 100
#: Most knots a calibration keeps.
MAX_KNOTS = 200


@dataclass(frozen=True)
class ScoreCalibration:
    """Knots of a non-decreasing map from score to probability of the positive class.

    ``scores`` is strictly increasing; ``probabilities`` is non-decreasing, within [0, 1];
    ``rows`` and ``positives`` say what it was fitted on.
    """

    scores: NDArray[np.float64]
    probabilities: NDArray[np.float64]
    rows: int
    positives: int

    def apply(self, score: NDArray[np.float64]) -> NDArray[np.float64]:
        """The probability of the positive class at each score (NaN stays NaN).

        Between two knots a subnormal distance apart the interpolation's slope overflows
        and comes out infinite; such a score takes the lower knot's probability.
        """
        x = np.asarray(score, dtype=np.float64)
        out: NDArray[np.float64] = np.interp(x, self.scores, self.probabilities)
        overflowed = np.isinf(out)
        if overflowed.any():
            i = np.searchsorted(self.scores, x[overflowed], side="right") - 1
            out[overflowed] = self.probabilities[np.clip(i, 0, self.scores.size - 1)]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": "isotonic",
            "rows": self.rows,
            "positives": self.positives,
            "scores": self.scores.tolist(),
            "probabilities": self.probabilities.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ScoreCalibration:
        try:
            if data["method"] != "isotonic":
                raise ValueError(f"unknown method {data['method']!r}")
            scores = np.asarray(data["scores"], dtype=np.float64)
            probabilities = np.asarray(data["probabilities"], dtype=np.float64)
            ok = (
                scores.ndim == 1
                and scores.size >= 1
                and probabilities.shape == scores.shape
                and bool(np.all(np.isfinite(scores)))
                and bool(np.all(np.diff(scores) > 0))
                and bool(np.all(np.diff(probabilities) >= 0))
                and bool(np.all((probabilities >= 0) & (probabilities <= 1)))
            )
            if not ok:
                raise ValueError("knots are not increasing scores with probabilities in [0, 1]")
            return cls(scores, probabilities, int(data["rows"]), int(data["positives"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise ReferenceError(f"invalid score calibration: {exc!r}") from exc


def fit_calibration(
    score: ArrayLike, positive: ArrayLike, *, max_knots: int = MAX_KNOTS
) -> ScoreCalibration | str:
    """The calibration of ``score`` against ``positive`` (true where the label is the
    positive class), or why there is none. Rows whose score is not finite are left out;
    the caller leaves out rows without a label."""
    if max_knots < 2:
        raise ValueError("max_knots must be >= 2")
    s = np.asarray(score, dtype=np.float64).ravel()
    y = np.asarray(positive, dtype=bool).ravel()
    if s.shape != y.shape:
        raise ValueError("score and positive must have the same length")
    keep = np.isfinite(s)
    s, y = s[keep], y[keep]
    n, n_pos = int(s.size), int(np.count_nonzero(y))
    if n < MIN_ROWS:
        return f"only {n} labelled reference rows with a score (calibration needs {MIN_ROWS})"
    if n_pos == 0 or n_pos == n:
        return f"all {n} labelled reference rows are of one class"
    values, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    # Distinct scores pooled into at most max_knots runs of about equal row counts.
    cum = np.cumsum(counts)
    group = np.minimum((cum - counts) * max_knots // n, max_knots - 1)
    _, group = np.unique(group, return_inverse=True)
    row_group = group.ravel()[inverse]
    weight = np.bincount(row_group).astype(np.float64)
    starts = np.flatnonzero(np.r_[True, np.diff(group.ravel()) > 0])
    ends = np.r_[starts[1:] - 1, values.size - 1]
    # a group's mean score, kept within its own scores against rounding: strictly increasing
    knots = np.clip(np.bincount(row_group, weights=s) / weight, values[starts], values[ends])
    rate = np.bincount(row_group, weights=y.astype(np.float64)) / weight
    fitted = np.clip(isotonic_regression(rate, weights=weight, increasing=True).x, 0.0, 1.0)
    # Of a run of equal probabilities, only its first and last knots change the map.
    same_before = np.r_[False, fitted[1:] == fitted[:-1]]
    same_after = np.r_[fitted[:-1] == fitted[1:], False]
    needed = ~(same_before & same_after)
    return ScoreCalibration(
        np.asarray(knots[needed], dtype=np.float64),
        np.asarray(fitted[needed], dtype=np.float64),
        n,
        n_pos,
    )
