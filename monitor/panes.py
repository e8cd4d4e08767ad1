"""Pane counts: every feature's histogram and quality counters of one pane as one vector.

A model's :class:`CountLayout` lays out, for each feature (and the model output), its value
bins followed by four quality slots: missing, type mismatch, non-finite and out-of-range.
A pane is then a single int64 vector of counts plus a float64 vector of per-bin value sums
(numerical bins; the mean of a bin is where Wasserstein puts its mass). Adding two panes
or expiring one from a window is one vector addition or subtraction.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from monitor.binning import MISSING_CODE, CategoricalBins, NumericBins
from monitor.events import MISMATCH, NONFINITE, EventBatch
from monitor.reference import FeatureProfile, ReferenceProfile
from monitor.schema import FeatureKind

__all__ = ["QUALITY_SLOTS", "CountLayout", "FeatureSlots", "PaneCounts"]

#: Quality slots after each feature's value bins, in this order.
QUALITY_SLOTS = ("missing", "type_mismatch", "nonfinite", "out_of_range")


@dataclass(frozen=True)
class FeatureSlots:
    profile: FeatureProfile
    start: int

    @property
    def n_value_bins(self) -> int:
        return self.profile.bins.n_value_bins

    @property
    def values(self) -> slice:
        return slice(self.start, self.start + self.n_value_bins)

    def quality(self, name: str) -> int:
        return self.start + self.n_value_bins + QUALITY_SLOTS.index(name)

    @property
    def end(self) -> int:
        return self.start + self.n_value_bins + len(QUALITY_SLOTS)


class CountLayout:
    """Where each feature's bins sit in a pane vector, for one reference profile."""

    def __init__(
        self, profile: ReferenceProfile, range_margin: float = 0.0, accumulators: str = ""
    ) -> None:
        self.profile = profile
        self.range_margin = range_margin
        #: names what else a pane's accumulator vector holds (the model's KPIs)
        self.accumulators = accumulators
        slots: list[FeatureSlots] = []
        start = 0
        for fp in profile.features:
            slots.append(FeatureSlots(fp, start))
            start = slots[-1].end
        self.features = tuple(slots)
        self.prediction: FeatureSlots | None = None
        if profile.prediction is not None:
            self.prediction = FeatureSlots(profile.prediction, start)
            start = self.prediction.end
        self.size = start

    @functools.cached_property
    def fingerprint(self) -> str:
        """Names the bins, quality rules and KPIs: panes of equal fingerprints add up
        (computed once: every pane update carries it, and the profile's bins never change)."""
        parts: list[object] = [self.profile.to_dict(), self.range_margin]
        if self.accumulators:  # panes of other KPIs do not add up
            parts.append(self.accumulators)
        text = json.dumps(parts, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def bin_batch(
        self, batch: EventBatch, pane_of_event: NDArray[np.intp], n_panes: int
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Counts and value sums of ``batch`` per pane: arrays of shape ``(n_panes, size)``.

        ``pane_of_event`` gives each event's pane as 0..n_panes-1. Works per feature on
        whole columns; no Python loop runs per event.
        """
        n = len(batch)
        base = pane_of_event.astype(np.intp) * self.size
        keys: list[NDArray[np.intp]] = []
        sum_keys: list[NDArray[np.intp]] = []
        sum_weights: list[NDArray[np.float64]] = []
        slots = list(self.features)
        if self.prediction is not None:
            slots.append(self.prediction)
        for fs in slots:
            fp = fs.profile
            flags = batch.flags.get(fp.name)
            if fp.kind is FeatureKind.NUMERICAL:
                values = _numeric_column(batch, fp.name, n)
                assert isinstance(fp.bins, NumericBins)
                present = ~np.isnan(values)
                finite = present & np.isfinite(values)
                slot = np.full(n, fs.quality("missing"), dtype=np.intp)
                slot[present & ~finite] = fs.quality("nonfinite")
                value_slot = fs.start + fp.bins.assign(values[finite])
                slot[finite] = value_slot
                sum_keys.append(base[finite] + value_slot)
                sum_weights.append(values[finite])
                lo, hi = fp.valid_range(self.range_margin)
                out = finite & ((values < lo) | (values > hi))
                keys.append(base[out] + fs.quality("out_of_range"))
            else:
                column = _categorical_column(batch, fp.name, n)
                assert isinstance(fp.bins, CategoricalBins)
                codes = fp.bins.assign(column)
                slot = np.where(codes == MISSING_CODE, fs.quality("missing"), fs.start + codes)
            if flags is not None:
                slot[flags == MISMATCH] = fs.quality("type_mismatch")
                slot[flags == NONFINITE] = fs.quality("nonfinite")
            keys.append(base + slot)
        flat = np.concatenate(keys) if keys else np.empty(0, dtype=np.intp)
        total = n_panes * self.size
        counts = np.bincount(flat, minlength=total).astype(np.int64).reshape(n_panes, self.size)
        sums: NDArray[np.float64]
        if sum_keys:
            sums = (
                np.bincount(
                    np.concatenate(sum_keys), weights=np.concatenate(sum_weights), minlength=total
                )
                .reshape(n_panes, self.size)
                .astype(np.float64)
            )
        else:
            sums = np.zeros((n_panes, self.size), dtype=np.float64)
        return counts, sums


def _numeric_column(batch: EventBatch, name: str, n: int) -> NDArray[np.float64]:
    if name == "prediction":
        return batch.score
    column = batch.numerical.get(name)
    return np.full(n, np.nan) if column is None else column


def _categorical_column(batch: EventBatch, name: str, n: int) -> NDArray[np.object_]:
    if name == "prediction":
        return batch.label
    column = batch.categorical.get(name)
    return np.full(n, None, dtype=object) if column is None else column


@dataclass
class PaneCounts:
    """Counts and value sums of the events of one pane (or a sum of panes).

    ``extra`` holds the pane's performance accumulators (labels joined to predictions made
    in the pane, and the confidence-based expectation over all its predictions); it is
    empty for a model without performance tracking.
    """

    events: int
    counts: NDArray[np.int64]
    sums: NDArray[np.float64]
    extra: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))

    @staticmethod
    def nbytes(size: int, extra: int = 0) -> int:
        """Bytes of the arrays of a pane of ``size`` slots and ``extra`` accumulators: a
        count (int64) and a value sum (float64) per slot, a float64 per accumulator.

        >>> p = PaneCounts.zeros(1000, 10)
        >>> PaneCounts.nbytes(1000, 10) == p.counts.nbytes + p.sums.nbytes + p.extra.nbytes
        True
        """
        return 16 * size + 8 * extra

    @classmethod
    def zeros(cls, size: int, extra: int = 0) -> PaneCounts:
        return cls(
            0,
            np.zeros(size, dtype=np.int64),
            np.zeros(size, dtype=np.float64),
            np.zeros(extra, dtype=np.float64),
        )

    def copy(self) -> PaneCounts:
        return PaneCounts(self.events, self.counts.copy(), self.sums.copy(), self.extra.copy())

    def __iadd__(self, other: PaneCounts) -> PaneCounts:
        self.events += other.events
        self.counts += other.counts
        self.sums += other.sums
        if other.extra.size:
            self.extra += other.extra
        return self

    def __isub__(self, other: PaneCounts) -> PaneCounts:
        self.events -= other.events
        self.counts -= other.counts
        self.sums -= other.sums
        if other.extra.size:
            self.extra -= other.extra
        return self

    def snapshot(self) -> dict[str, Any]:
        return {
            "events": self.events,
            "counts": self.counts.copy(),
            "sums": self.sums.copy(),
            "extra": self.extra.copy(),
        }

    @classmethod
    def restore(cls, data: Mapping[str, Any], size: int, extra: int = 0) -> PaneCounts:
        counts = np.asarray(data["counts"], dtype=np.int64)
        sums = np.asarray(data["sums"], dtype=np.float64)
        more = np.asarray(data.get("extra", np.zeros(extra)), dtype=np.float64)
        if counts.shape != (size,) or sums.shape != (size,) or more.shape != (extra,):
            raise ValueError(f"pane of {counts.size} slots does not fit a layout of {size}")
        return cls(int(data["events"]), counts.copy(), sums.copy(), more.copy())
