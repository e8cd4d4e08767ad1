"""Why a feature drifted: reference vs window summaries, the bins that moved the score most,
and the rule that decided the verdict, all read from the counts a window already holds.

Nothing here sees raw values: a numerical feature's window holds, per reference bin, a
count and a sum of values. Its mean is exact (sum of sums over count); its quantiles are
read off the binned CDF, linear inside a bin, so each lies in the bin of the true one or
next to it (the reference's fine bins are percentiles, so within about one percentile);
its standard deviation adds the spread of the bin means to the spread *inside* each bin,
which only the reference knows (its per-bin sums of squares), so the window's is an
estimate and the reference's exact. A categorical feature's shares are exact.

A bin's contribution is its term of the deciding statistic, from
:func:`monitor.drift.terms` and :func:`monitor.drift.wasserstein_terms` (the formulas
written once), summed over the bins the chart shows (for a numerical feature, the coarse
groups of equal reference mass). They add up to the score for ``psi``, ``kl``,
``chisquare`` and ``wasserstein``, to its square for ``jensenshannon`` and ``hellinger``;
for ``ks`` a bin's is the largest CDF gap inside it, and the score is the largest of them.

>>> from monitor.reference import build_profile
>>> fp = build_profile("m", {"x": np.arange(1000.0)}).features[0]
>>> summary = numeric_summary(fp, fp.counts, fp.sums)
>>> summary["mean"], round(summary["std"], 3), summary["quantiles"]["0.5"]
(499.5, 288.675, 499.5)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from monitor.binning import CategoricalBins, NumericBins
from monitor.drift import SQUARED, DriftScore, is_drifted, terms, wasserstein_terms
from monitor.reference import FeatureProfile
from monitor.schema import FeatureKind

__all__ = [
    "QUANTILES",
    "TOP_BINS",
    "TOP_CATEGORIES",
    "categorical_summary",
    "contributions",
    "explain",
    "numeric_summary",
    "verdict_rule",
]

#: quantiles of a numerical feature's summary
QUANTILES: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)
#: bins listed as the top contributors
TOP_BINS = 5
#: bins a chart shows at most: a feature with more (up to 10 000 categories) shows the
#: largest on either side and one bin for the rest, so a page stays small
CHART_BINS = 40
#: categories whose shares a categorical summary lists (the reference's most frequent)
TOP_CATEGORIES = 10
#: methods whose contributions are computed on the fine bins (as their scores are)
_FINE = frozenset({"wasserstein", "ks"})


def numeric_summary(
    fp: FeatureProfile, counts: NDArray[np.int64], sums: NDArray[np.float64]
) -> dict[str, Any] | None:
    """Count, mean, standard deviation and :data:`QUANTILES` of values binned in ``fp``'s
    bins (``counts`` and value ``sums`` per bin); None without values."""
    assert isinstance(fp.bins, NumericBins)
    c = np.asarray(counts, dtype=np.float64)
    n = float(c.sum())
    if n <= 0:
        return None
    s = np.asarray(sums, dtype=np.float64)
    mean = float(s.sum() / n)
    with np.errstate(invalid="ignore", divide="ignore"):
        bin_mean = np.where(c > 0, s / c, 0.0)
    variance = float(np.sum(c * ((bin_mean - mean) ** 2 + _within(fp))) / n)
    return {
        "count": int(n),
        "mean": mean,
        "std": math.sqrt(max(variance, 0.0)),
        "quantiles": dict(zip(map(str, QUANTILES), _quantiles(fp.bins, c, bin_mean), strict=True)),
    }


def _within(fp: FeatureProfile) -> NDArray[np.float64]:
    """The reference's variance of the values inside each bin (0 where unknown)."""
    if fp.sumsq is None:
        return np.zeros(fp.counts.size)
    c = fp.counts.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(c > 0, fp.sumsq / c - (fp.sums / c) ** 2, 0.0)
    out: NDArray[np.float64] = np.maximum(var, 0.0)
    return out


def _quantiles(
    bins: NumericBins, counts: NDArray[np.float64], bin_mean: NDArray[np.float64]
) -> list[float]:
    """Quantiles of the binned distribution: linear inside an interior bin, the bin's mean
    for the underflow and overflow bins (they have no second edge)."""
    edges = bins.edges
    lo = np.concatenate(([bin_mean[0]], edges[:-1], [bin_mean[-1]]))
    hi = np.concatenate(([bin_mean[0]], edges[1:], [bin_mean[-1]]))
    cdf = np.cumsum(counts)
    target = np.asarray(QUANTILES) * cdf[-1]
    k = np.minimum(np.searchsorted(cdf, target, side="left"), counts.size - 1)
    below = cdf[k] - counts[k]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.clip(np.where(counts[k] > 0, (target - below) / counts[k], 0.0), 0.0, 1.0)
    out: list[float] = (lo[k] + frac * (hi[k] - lo[k])).tolist()
    return out


def categorical_summary(fp: FeatureProfile, counts: NDArray[np.int64]) -> dict[str, Any] | None:
    """Count and shares of the reference's :data:`TOP_CATEGORIES` most frequent categories,
    of the other known ones (``other``) and of values never seen in the reference (``new``);
    None without values."""
    assert isinstance(fp.bins, CategoricalBins)
    n = int(np.sum(counts))
    if n <= 0:
        return None
    share = np.asarray(counts, dtype=np.float64) / n
    top = min(TOP_CATEGORIES, len(fp.bins.categories))
    shares = {c: float(share[i]) for i, c in enumerate(fp.bins.categories[:top])}
    shares["other"] = float(share[top : fp.bins.other_index + 1].sum())
    shares["new"] = float(share[fp.bins.new_index])
    return {"count": n, "shares": shares}


def _groups(fp: FeatureProfile) -> tuple[NDArray[np.intp], list[dict[str, Any]]]:
    """The bins a chart shows (the coarse groups drift sees), as fine-bin starts and labels."""
    starts = fp.bins.coarse_starts
    if isinstance(fp.bins, CategoricalBins):
        names = [*fp.bins.categories, "other/new"]
        return starts, [{"label": name} for name in names]
    edges = fp.bins.edges
    ends = np.append(starts[1:], fp.bins.n_value_bins)
    labels = []
    for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
        lo = float(edges[a - 1]) if a >= 1 else -math.inf
        hi = float(edges[b - 1]) if b - 1 < edges.size else math.inf
        labels.append({"label": f"{_short(lo)}…{_short(hi)}", "low": lo, "high": hi})
    return starts, labels


def _capped(
    bins: list[dict[str, Any]], size: NDArray[np.float64], adds_up_to: str | None
) -> list[dict[str, Any]]:
    """At most :data:`CHART_BINS` bins: the largest (by ``size``) in their order, then one
    bin holding the rest, whose shares and contributions are theirs summed."""
    if len(bins) <= CHART_BINS:
        return bins
    keep = set(np.argsort(-size, kind="stable")[: CHART_BINS - 1].tolist())
    rest = [b for i, b in enumerate(bins) if i not in keep]
    terms = [b["contribution"] for b in rest]
    merged: dict[str, Any] = {
        "label": f"{len(rest)} more",
        "reference_share": sum(b["reference_share"] for b in rest),
        "current_share": sum(b["current_share"] for b in rest),
        "contribution": None
        if adds_up_to is None or None in terms
        else (max(terms) if adds_up_to == "max" else sum(terms)),
    }
    return [b for i, b in enumerate(bins) if i in keep] + [merged]


def _short(x: float) -> str:
    return "" if not math.isfinite(x) else f"{x:.3g}"


def contributions(
    fp: FeatureProfile, method: str, cur: NDArray[np.int64]
) -> tuple[NDArray[np.float64], str]:
    """Each chart bin's term of ``method``'s statistic on window counts ``cur``, and what
    the terms add up to: ``score``, ``score_squared`` or, for ``ks``, ``max``."""
    starts = fp.bins.coarse_starts
    ref = fp.counts.astype(np.float64)
    now = np.asarray(cur, dtype=np.float64)
    if method in _FINE and fp.kind is FeatureKind.NUMERICAL:
        if method == "wasserstein":
            points = fp.wasserstein_points()
            fine = wasserstein_terms(ref, now, points, points, fp.std)
        else:
            fine = terms(method, ref, now)
    else:
        coarse = terms(method, np.add.reduceat(ref, starts), np.add.reduceat(now, starts))
        return coarse, "score_squared" if method in SQUARED else "score"
    if method == "ks":
        return np.maximum.reduceat(fine, starts), "max"
    return np.add.reduceat(fine, starts), "score"


def verdict_rule(
    decision: DriftScore | None,
    drifted: bool | None,
    threshold: float,
    min_effect: float,
    values: int,
    min_events: int,
) -> str:
    """Which rule settled a verdict: ``min_events`` (too few values for one), ``threshold``
    (the score against its threshold, a test's p-value against its alpha) or
    ``min_effect`` (past the threshold, but a move too small to count)."""
    if drifted is None or decision is None or values < min_events:
        return "min_events"
    if drifted or not is_drifted(decision, threshold):
        return "threshold"
    return "min_effect"


def explain(
    fp: FeatureProfile,
    method: str,
    cur: NDArray[np.int64],
    cur_sums: NDArray[np.float64],
    *,
    top: int = TOP_BINS,
) -> dict[str, Any]:
    """Reference and window summaries, every chart bin with both shares and its
    contribution to ``method``'s score, and the ``top`` bins by contribution."""
    numerical = fp.kind is FeatureKind.NUMERICAL
    if numerical:
        reference = numeric_summary(fp, fp.counts, fp.sums)
        current = numeric_summary(fp, cur, cur_sums)
    else:
        reference = categorical_summary(fp, fp.counts)
        current = categorical_summary(fp, cur)
    starts, bins = _groups(fp)
    ref_group = np.add.reduceat(fp.counts.astype(np.float64), starts)
    cur_group = np.add.reduceat(np.asarray(cur, dtype=np.float64), starts)
    ref_share = ref_group / ref_group.sum() if ref_group.sum() > 0 else ref_group
    cur_share = cur_group / cur_group.sum() if cur_group.sum() > 0 else cur_group
    adds_up_to = None
    terms_: list[float | None] = [None] * len(bins)
    if cur_group.sum() > 0 and ref_group.sum() > 0:
        values, adds_up_to = contributions(fp, method, cur)
        terms_ = values.tolist()
    for b, r, c, t in zip(bins, ref_share.tolist(), cur_share.tolist(), terms_, strict=True):
        b.update(reference_share=r, current_share=c, contribution=t)
    ranked = sorted(
        (b for b in bins if b["contribution"] is not None and b["contribution"] > 0),
        key=lambda b: -b["contribution"],
    )
    return {
        "reference": reference,
        "current": current,
        "bins": _capped(bins, np.maximum(ref_share, cur_share), adds_up_to),
        "top_bins": ranked[:top],
        "contributions_add_up_to": adds_up_to,
    }
