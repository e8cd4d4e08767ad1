"""Business KPIs: named per-window aggregations of an event field, as mergeable vectors.

A KPI aggregates one field (a numerical feature, ``prediction``: the score, or
``tags.NAME``: an event tag read as a number), or an arithmetic
:class:`~monitor.expressions.Expression` of them, over the window's events, optionally
only where the prediction is positive or negative and where the ground truth is (a
*label-aware* KPI, counted when the label joins its prediction, in the prediction's pane,
like realized performance): ``count``, ``sum``, ``mean``, ``rate`` (the sum, or the count
without a field, per second of window) and ``quantile`` (from a histogram in the
reference's fine quantile bins of the field, which adds up across panes and partitions
like every other count). Each KPI is a slice of a pane's accumulator vector: ``[events,
sum]``, or the histogram's counts then its value sums.

>>> from monitor.reference import build_profile
>>> p = build_profile("m", {"amount": np.arange(100.0)})
>>> kpis = KpiSet.of(p, {"total": Kpi("sum", "amount")}, positive=lambda s, l: s >= 0.5)
>>> cols = {"amount": np.array([1.0, 2.0, np.nan])}
>>> kpis.values(kpis.accumulate(cols, np.zeros(3), np.full(3, None)), 60.0)
{'total': 3.0}
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from monitor.binning import NumericBins
from monitor.events import EventBatch
from monitor.expressions import Expression
from monitor.reference import PREDICTION, ReferenceProfile
from monitor.schema import FeatureKind
from monitor.segments import TAG_PREFIX

__all__ = ["AGGREGATIONS", "Kpi", "KpiSet"]

AGGREGATIONS = ("count", "sum", "mean", "rate", "quantile")

#: a prediction is positive: ``positive(score, label)`` per event
Positive = Callable[[NDArray[np.float64], NDArray[np.object_]], NDArray[np.bool_]]


@dataclass(frozen=True)
class Kpi:
    """One KPI: its aggregation, field (or expression) and filters."""

    agg: str
    field: str | None = None
    q: float | None = None
    #: ``"positive"`` or ``"negative"``: only events whose prediction is
    prediction: str | None = None
    #: ``"positive"`` or ``"negative"``: only events whose ground truth is (label-aware)
    label: str | None = None
    #: instead of ``field``: evaluated on the events' columns (not with ``quantile``: its
    #: sketch's bins are the reference's of one column)
    expr: Expression | None = None

    @property
    def operands(self) -> tuple[str, ...]:
        """The fields it reads."""
        return self.expr.names if self.expr is not None else (self.field,) if self.field else ()


@dataclass(frozen=True)
class _Slot:
    name: str
    kpi: Kpi
    start: int
    bins: NumericBins | None  # the quantile sketch's bins

    @property
    def size(self) -> int:
        return 2 if self.bins is None else 2 * self.bins.n_value_bins


class KpiSet:
    """A model's KPIs and where each sits in an accumulator vector."""

    def __init__(
        self,
        slots: tuple[_Slot, ...],
        positive: Positive,
        truth: Callable[[NDArray[np.object_]], NDArray[np.bool_]] | None = None,
    ) -> None:
        self.slots = slots
        self.positive = positive
        self.truth = truth
        self.size = sum(s.size for s in slots)
        #: the event tags the KPIs read as numbers (without ``tags.``)
        self.tags = tuple(
            dict.fromkeys(
                f.removeprefix(TAG_PREFIX)
                for s in slots
                for f in s.kpi.operands
                if f.startswith(TAG_PREFIX)
            )
        )
        #: the fields label-aware KPIs read, which a prediction keeps until its label joins
        #: (an expression's operands; its ``prediction`` is the joined pair's score)
        self.joined_fields = tuple(
            dict.fromkeys(
                f
                for s in slots
                if s.kpi.label
                for f in s.kpi.operands
                if s.kpi.expr is None or f != PREDICTION
            )
        )

    @classmethod
    def of(
        cls,
        profile: ReferenceProfile,
        kpis: Mapping[str, Kpi],
        positive: Positive,
        truth: Callable[[NDArray[np.object_]], NDArray[np.bool_]] | None = None,
    ) -> KpiSet:
        """The KPIs of a model whose reference is ``profile``: a field is a numerical
        feature of it or a numerical prediction (a quantile's also needs the reference's
        bins of it: they are the sketch's)."""
        slots, start = [], 0
        for name, kpi in kpis.items():
            bins = None
            fp = None
            tagged = any(f.startswith(TAG_PREFIX) for f in kpi.operands)
            if kpi.agg == "quantile" and (kpi.expr is not None or tagged):
                raise ValueError(f"kpi {name}: a quantile of an expression or a tag has no bins")
            for operand in kpi.operands:
                where = operand if kpi.expr is None else f"{operand} in {kpi.expr}"
                if operand.startswith(TAG_PREFIX):
                    continue  # no reference column: tags come with the events
                if operand == PREDICTION:
                    fp = profile.prediction
                    if fp is not None and fp.kind is not FeatureKind.NUMERICAL:
                        raise ValueError(f"kpi {name}: the prediction is a class, not a number")
                    continue
                fp = next((f for f in profile.features if f.name == operand), None)
                if fp is None or fp.kind is not FeatureKind.NUMERICAL:
                    # a sum of a column that never comes would be 0 forever
                    raise ValueError(f"kpi {name}: {where} is no numerical reference column")
            if kpi.agg == "quantile":
                if fp is None:
                    raise ValueError(f"kpi {name}: {kpi.field} is no numerical reference column")
                assert isinstance(fp.bins, NumericBins)
                bins = fp.bins
            if kpi.label is not None and truth is None:
                raise ValueError(f"kpi {name}: a filter on the label needs a positive class")
            slot = _Slot(name, kpi, start, bins)
            slots.append(slot)
            start += slot.size
        return cls(tuple(slots), positive, truth)

    @property
    def key(self) -> str:
        """Names the KPIs and their places in the vector (part of a pane's fingerprint)."""
        return json.dumps(
            [[s.name, s.kpi.agg, s.kpi.field, s.kpi.q, s.kpi.prediction, s.kpi.label, s.size]
             + ([s.kpi.expr.text] if s.kpi.expr is not None else [])
             for s in self.slots]
        )  # fmt: skip

    def columns(
        self, batch: EventBatch, rows: NDArray[np.intp] | None = None
    ) -> dict[str, NDArray[np.float64]]:
        """The numerical columns of ``batch`` (of its ``rows``) and, as ``tags.NAME``, the
        tags the KPIs read, as numbers (NaN where a tag is missing or no number)."""
        out = {k: v if rows is None else v[rows] for k, v in batch.numerical.items()}
        for name in self.tags:
            column = batch.tags.get(name)
            if column is not None:
                out[TAG_PREFIX + name] = numbers(column if rows is None else column[rows])
        return out

    def accumulate(
        self,
        numerical: Mapping[str, NDArray[np.float64]],
        score: NDArray[np.float64],
        label: NDArray[np.object_],
    ) -> NDArray[np.float64]:
        """The accumulator vector of these events' KPIs but the label-aware ones (whole
        columns, no loop per event)."""
        return self._accumulate(numerical, score, label, None)

    def accumulate_joined(
        self,
        values: NDArray[np.float64],
        score: NDArray[np.float64],
        label: NDArray[np.object_],
        y_true: NDArray[np.object_],
    ) -> NDArray[np.float64]:
        """The label-aware KPIs of joined pairs; ``values`` holds, per pair, the
        :attr:`joined_fields` of its prediction (shape ``(pairs, fields)``)."""
        numerical = {f: values[:, i] for i, f in enumerate(self.joined_fields)}
        return self._accumulate(numerical, score, label, y_true)

    def joined_values(
        self, numerical: Mapping[str, NDArray[np.float64]], n: int
    ) -> NDArray[np.float64]:
        """Shape ``(n, fields)``: the :attr:`joined_fields` of ``n`` predictions."""
        cols = [numerical.get(f, np.full(n, np.nan)) for f in self.joined_fields]
        return np.stack(cols, axis=1) if cols else np.empty((n, 0))

    def _accumulate(
        self,
        numerical: Mapping[str, NDArray[np.float64]],
        score: NDArray[np.float64],
        label: NDArray[np.object_],
        y_true: NDArray[np.object_] | None,
    ) -> NDArray[np.float64]:
        out = np.zeros(self.size)
        n = score.size
        positive: NDArray[np.bool_] | None = None
        for s in self.slots:
            k = s.kpi
            if (k.label is None) != (y_true is None):
                continue  # counted at prediction time, or when the label joins
            keep = np.ones(n, dtype=bool)
            if y_true is not None and self.truth is not None:
                truth = self.truth(y_true)
                keep &= truth if k.label == "positive" else ~truth
            if k.prediction is not None:
                if positive is None:
                    positive = self.positive(score, label)
                keep &= positive if k.prediction == "positive" else ~positive
            if k.expr is not None:
                values: NDArray[np.float64] | None = k.expr.evaluate(numerical, score)
            elif k.field is None:
                out[s.start] = float(keep.sum())
                continue
            else:
                values = score if k.field == PREDICTION else numerical.get(k.field)
            if values is None:
                continue
            values = values[keep]
            values = values[np.isfinite(values)]
            if s.bins is None:
                out[s.start : s.start + 2] = (values.size, float(values.sum()))
            else:
                m = s.bins.n_value_bins
                idx = s.bins.assign(values)
                out[s.start : s.start + m] = np.bincount(idx, minlength=m)
                out[s.start + m : s.start + 2 * m] = np.bincount(idx, weights=values, minlength=m)
        return out

    def values(self, acc: NDArray[np.float64], seconds: float | None) -> dict[str, float]:
        """Each KPI's value on an accumulator vector (a window ``seconds`` long); KPIs with
        no value (a mean of nothing) are left out."""
        out: dict[str, float] = {}
        for s in self.slots:
            part = acc[s.start : s.start + s.size]
            agg = s.kpi.agg
            if s.bins is not None:
                assert s.kpi.q is not None
                q = _quantile(s.bins, part, s.kpi.q)
                if q is not None:
                    out[s.name] = q
                continue
            n, total = float(part[0]), float(part[1])
            amount = total if s.kpi.operands else n
            if agg == "count":
                out[s.name] = n
            elif agg == "sum":
                out[s.name] = amount
            elif agg == "mean" and n > 0:
                out[s.name] = total / n
            elif agg == "rate" and seconds:
                out[s.name] = amount / seconds
        return out


def numbers(column: NDArray[np.object_]) -> NDArray[np.float64]:
    """Tag values (strings, ``None`` where missing) as numbers, NaN for what is none: parsed
    by numpy in one pass, or once per distinct value when some value is no number.

    >>> numbers(np.array(["1.5", None, "2", "n/a", " 3 "], dtype=object))
    array([1.5, nan, 2. , nan, 3. ])
    """
    out = np.full(column.size, np.nan)
    present = np.flatnonzero(np.not_equal(column, np.array(None, dtype=object)))
    values = column[present]
    try:
        out[present] = values.astype(np.float64)
    except (TypeError, ValueError):
        distinct, inverse = np.unique(values.astype(str), return_inverse=True)
        out[present] = np.array([_number(v) for v in distinct.tolist()])[inverse]
    return out


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return math.nan


def _quantile(bins: NumericBins, part: NDArray[np.float64], q: float) -> float | None:
    """The ``q`` quantile of a histogram: linear inside the interior bin where the
    cumulative count crosses ``q`` (at the bin's mean for under- and overflow)."""
    m = bins.n_value_bins
    counts, sums = part[:m], part[m:]
    n = counts.sum()
    if n <= 0:
        return None
    target = q * n
    cum = np.cumsum(counts)
    k = int(np.searchsorted(cum, target, side="left"))
    k = min(k, m - 1)
    if k == 0 or k == m - 1:
        return float(sums[k] / counts[k])
    lo, hi = bins.edges[k - 1], bins.edges[k]
    before = cum[k] - counts[k]
    return float(lo + (hi - lo) * (target - before) / counts[k])
