"""Repeated evaluation: false alerts per day, not per evaluation.

A model is evaluated once a pane (a minute by default) on a sliding window of ``W`` panes
(an hour: 60). Two consecutive windows share ``W - 1`` panes, so their verdicts are
nearly the same: when nothing has drifted, flagged evaluations come in runs, and an alert
rule (whatever its ``for:``) pages at most once per run. What a user lives with is the
rate of those runs.

To count them, a feature's score is treated as what it is close to: a function of the
sum of ``W`` independent pane counts, which behaves like a standard normal variable
``X`` that moves by one pane at each evaluation. Consecutive values then have the
correlation ``rho = 1 - 1 / W``, and a window flagged at level ``alpha``
(``X >= u``, ``P(X >= u) = alpha``) starts a run when the window before it was not
flagged:

    runs per evaluation = P(X_prev < u <= X)
                        = integral over y >= u of phi(y) Phi((u - rho y) / sqrt(1 - rho^2))

With one pane per window (``W = 1``) windows are independent and this is
``alpha (1 - alpha)``; with an hour of 1-minute panes a run lasts a few evaluations on
average, so runs are rarer than flagged evaluations. :func:`alpha_for_runs` inverts the
relation: the per-evaluation ``alpha`` at which runs start at a given rate.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import special

__all__ = ["alpha_for_runs", "runs_per_evaluation"]

#: integration grid above the level, in standard deviations: the integrand is negligible
#: beyond 12
_STEPS = np.linspace(0.0, 12.0, 24001)


def runs_per_evaluation(alpha: float, window_panes: int) -> float:
    """Expected number of runs of flagged evaluations starting per evaluation, for a
    feature judged at ``alpha`` per evaluation on a window of ``window_panes`` panes that
    slides by one pane.

    >>> round(runs_per_evaluation(0.01, 1), 6)
    0.0099
    >>> runs_per_evaluation(0.01, 60) < 0.01 / 2
    True
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if window_panes < 1:
        raise ValueError(f"a window has at least one pane, got {window_panes}")
    if window_panes == 1:
        return alpha * (1 - alpha)
    rho = 1.0 - 1.0 / window_panes
    u = float(special.ndtri(1.0 - alpha))
    y = u + _STEPS
    f = np.exp(-0.5 * y * y) / math.sqrt(2 * math.pi)
    f *= special.ndtr((u - rho * y) / math.sqrt(1.0 - rho * rho))
    return float(np.trapezoid(f, y))


@lru_cache(maxsize=256)
def alpha_for_runs(rate: float, window_panes: int) -> float:
    """The per-evaluation ``alpha`` at which runs of flagged evaluations start ``rate``
    times per evaluation (see :func:`runs_per_evaluation`).

    >>> a = alpha_for_runs(1e-4, 60)
    >>> round(runs_per_evaluation(a, 60) / 1e-4, 6)
    1.0
    """
    if not 0 < rate < 0.25:
        raise ValueError(f"a rate of runs must be in (0, 0.25), got {rate}")
    lo, hi = math.log(rate), math.log(0.5)  # runs are never more frequent than flags
    for _ in range(80):
        mid = (lo + hi) / 2
        if runs_per_evaluation(math.exp(mid), window_panes) > rate:
            hi = mid
        else:
            lo = mid
    return math.exp(lo)
