"""Reference bins: fixed once from the reference, so every window is just a vector of counts.

Numerical features get quantile edges on a fine grid (``quantiles`` bins, default 100)
plus an underflow and an overflow bin; distance methods that need more mass per bin
(PSI, KL, Jensen-Shannon, Hellinger, chi-square) see the fine bins coarsened into about
``coarse_bins`` groups of equal reference mass. The underflow and overflow bins are empty
in the reference by construction, so they are never a group of their own: they belong to
the first and the last group, which carry real reference mass (one value below the
reference minimum must not weigh like a new category). Categorical features get the top-K
reference categories, an "other" bin for the remaining reference categories and a "new"
bin for values never seen in the reference; for drift, "other" and "new" are one bin.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import repeat
from typing import Any

import numpy as np
from numpy.typing import NDArray

from monitor.exceptions import ReferenceError

__all__ = ["MISSING_CODE", "CategoricalBins", "NumericBins", "category_text"]

#: Code :meth:`CategoricalBins.assign` gives a missing (null) value.
MISSING_CODE = -1
#: How many reference categories are remembered to tell "other" from "new".
MAX_KNOWN_CATEGORIES = 10_000


@dataclass(frozen=True)
class NumericBins:
    """Quantile bins of a numerical feature.

    ``edges`` has ``m + 1`` increasing values; value bin 0 is the underflow (``x < edges[0]``),
    bins ``1..m`` are interior and bin ``m + 1`` the overflow. The last edge is nudged up by
    one ulp so the reference maximum falls inside.

    >>> bins = NumericBins.from_values(np.arange(100.0), quantiles=4, coarse_bins=2)
    >>> bins.n_value_bins
    6
    >>> bins.assign(np.array([-1.0, 0.0, 50.0, 99.0, 1e9])).tolist()
    [0, 1, 3, 4, 5]
    >>> bins.coarse_starts.tolist()
    [0, 3]
    """

    edges: NDArray[np.float64]
    coarse_starts: NDArray[np.intp]
    _grid: _EdgeGrid | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_grid", _EdgeGrid.of(self.edges))

    @classmethod
    def from_values(
        cls, values: NDArray[np.float64], quantiles: int, coarse_bins: int
    ) -> NumericBins:
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            raise ReferenceError("no finite reference values to bin")
        edges = np.unique(np.quantile(finite, np.linspace(0.0, 1.0, quantiles + 1)))
        if edges.size == 1:  # a constant feature still needs one interior bin
            edges = np.append(edges, edges[0])
        edges[-1] = np.nextafter(edges[-1], np.inf)
        # Coarse groups: cut at the reference's coarse quantiles (snapped to fine edges).
        cuts = np.quantile(finite, np.linspace(0.0, 1.0, coarse_bins + 1)[1:-1])
        interior = np.searchsorted(edges, cuts, side="right")
        starts = np.concatenate(([0], interior))
        return cls(edges=edges.astype(np.float64), coarse_starts=_honest(starts, edges.size))

    @property
    def n_value_bins(self) -> int:
        return int(self.edges.size + 1)

    def assign(self, values: NDArray[np.float64]) -> NDArray[np.intp]:
        """Value-bin index of each value (NaN lands in the overflow; callers mask it first)."""
        if self._grid is not None and values.size >= _GRID_MIN_VALUES:
            found = self._grid.assign(values)
            if found is not None:
                return found
        return np.searchsorted(self.edges, values, side="right")

    def centers(self) -> NDArray[np.float64]:
        """A representative point per value bin, for bins that saw no values."""
        mid = (self.edges[:-1] + self.edges[1:]) / 2.0
        return np.concatenate(([self.edges[0]], mid, [self.edges[-1]]))

    def to_dict(self) -> dict[str, Any]:
        return {"edges": self.edges.tolist(), "coarse_starts": self.coarse_starts.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NumericBins:
        edges = np.asarray(data["edges"], dtype=np.float64)
        starts = np.asarray(data["coarse_starts"], dtype=np.intp)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise ReferenceError("numerical bin edges must be at least two increasing numbers")
        if starts.size == 0 or starts[0] != 0 or np.any(np.diff(starts) <= 0):
            raise ReferenceError("coarse_starts must start at 0 and increase")
        if starts[-1] >= edges.size + 1:
            raise ReferenceError("coarse_starts points past the last bin")
        # profiles written before outer bins joined their neighbours are read the new way
        return cls(edges=edges, coarse_starts=_honest(starts, edges.size))


#: below this many values a binary search is as quick as the grid
_GRID_MIN_VALUES = 64
#: at most this many edges share a grid cell, else the grid is finer (or not used)
_GRID_EDGES_PER_CELL = 3
_GRID_MAX_CELLS = 1 << 16


@dataclass(frozen=True)
class _EdgeGrid:
    """``searchsorted(edges, x, side="right")``, exactly, in a few array passes.

    A binary search per value costs a branch mispredicted per step (~30 ns a value). Here
    ``cell(x)``, a uniform grid over the edges, is monotone in ``x`` (floating-point
    subtraction, product and truncation all are), so an edge in an earlier cell than
    ``x``'s is ``<= x`` and one in a later cell is ``> x``: the answer is the number of
    edges in earlier cells plus those of ``x``'s own cell that are ``<= x``, at most
    ``_GRID_EDGES_PER_CELL`` comparisons.

    >>> edges = np.array([0.0, 0.1, 0.5, 0.51, 3.0, 10.0])
    >>> x = np.array([-1.0, 0.0, 0.05, 0.1, 0.505, 0.51, 2.9, 3.0, 9.99, 10.0, np.inf, -np.inf])
    >>> grid = _EdgeGrid.of(edges)
    >>> grid.assign(x).tolist() == np.searchsorted(edges, x, side="right").tolist()
    True
    """

    low: float
    scale: float
    cells: int
    before: NDArray[np.intp]  # per cell: edges in earlier cells
    padded: NDArray[np.float64]  # the edges, then NaN (never <= anything, not even +inf)
    per_cell: int

    @classmethod
    def of(cls, edges: NDArray[np.float64]) -> _EdgeGrid | None:
        if edges.size < 2 or not np.all(np.isfinite(edges)):
            return None
        low, span = float(edges[0]), float(edges[-1] - edges[0])
        cells = 16 * edges.size
        while cells <= _GRID_MAX_CELLS:
            scale = cells / span if span > 0 else math.inf
            if not math.isfinite(scale):
                return None
            grid = cls(low, scale, cells, np.empty(0, np.intp), np.empty(0), 0)
            of_edge = grid.cell(edges)
            per_cell = int(np.bincount(of_edge).max())
            if per_cell <= _GRID_EDGES_PER_CELL:
                before = np.searchsorted(of_edge, np.arange(cells), side="left")
                padded = np.concatenate([edges, np.full(per_cell, np.nan)])
                return cls(low, scale, cells, before.astype(np.intp), padded, per_cell)
            cells *= 4
        return None  # edges too uneven (a heavy tail): binary search

    def cell(self, x: NDArray[np.float64]) -> NDArray[np.intp]:
        """The grid cell of each value; NaN makes garbage (callers check)."""
        with np.errstate(over="ignore"):  # far beyond the edges: +-inf, clipped like the rest
            z = (np.asarray(x, dtype=np.float64) - self.low) * self.scale
        np.clip(z, 0, self.cells - 1, out=z)
        return z.astype(np.intp)

    def assign(self, x: NDArray[np.float64]) -> NDArray[np.intp] | None:
        """The bins of ``x``; ``None`` when ``x`` holds NaN (left to the binary search)."""
        x = np.asarray(x, dtype=np.float64)
        if np.isnan(x).any():
            return None
        at = self.before[self.cell(x)]
        found = at.copy()
        for step in range(self.per_cell):
            found += self.padded[at + step] <= x
        return found


def _honest(starts: NDArray[np.intp], n_edges: int) -> NDArray[np.intp]:
    """Coarse group starts where the underflow (bin 0) and the overflow (bin ``n_edges``)
    share a group with their interior neighbour.

    >>> _honest(np.array([0, 1, 5, 9, 11]), 11).tolist()
    [0, 5, 9]
    """
    kept = np.unique(np.asarray(starts, dtype=np.intp))
    kept = kept[(kept > 1) & (kept < n_edges)]
    return np.concatenate(([0], kept)).astype(np.intp)


@dataclass(frozen=True)
class CategoricalBins:
    """Top-K categories, then "other" (a known reference category) and "new" (unseen).

    >>> bins = CategoricalBins.from_values(np.array(["a", "b", "a", "c"], dtype=object), 2)
    >>> bins.categories
    ('a', 'b')
    >>> bins.assign(np.array(["a", "c", "zz", None, "b"], dtype=object)).tolist()
    [0, 2, 3, -1, 1]
    >>> bins.coarse_starts.tolist()
    [0, 1, 2]
    """

    categories: tuple[str, ...]
    known: frozenset[str]
    _lookup: dict[object, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        k = len(self.categories)
        lookup: dict[object, int] = dict.fromkeys(self.known, k)
        lookup.update({c: i for i, c in enumerate(self.categories)})
        # Serving apps send integer codes as JSON numbers; the reference file read them as text.
        for c, code in list(lookup.items()):
            if isinstance(c, str) and c.lstrip("-").isdigit():
                lookup.setdefault(int(c), code)
        lookup[None] = MISSING_CODE
        object.__setattr__(self, "_lookup", lookup)

    @classmethod
    def from_values(
        cls,
        values: NDArray[np.object_],
        max_categories: int,
        rank_on: NDArray[np.object_] | None = None,
    ) -> CategoricalBins:
        """The ``max_categories`` most frequent categories of ``rank_on`` (default: of
        ``values``); every category of ``values`` is known."""
        ranked = _ranked(values)
        if not ranked:
            raise ReferenceError("no non-missing reference values to bin")
        top = ranked if rank_on is None else _ranked(rank_on) or ranked
        return cls(
            categories=tuple(top[:max_categories]),
            known=frozenset(ranked[:MAX_KNOWN_CATEGORIES]) | frozenset(top[:max_categories]),
        )

    @property
    def other_index(self) -> int:
        return len(self.categories)

    @property
    def new_index(self) -> int:
        return len(self.categories) + 1

    @property
    def n_value_bins(self) -> int:
        return len(self.categories) + 2

    @property
    def coarse_starts(self) -> NDArray[np.intp]:
        """Drift sees each top category, then "other" and "new" as one bin."""
        return np.arange(len(self.categories) + 1, dtype=np.intp)

    def assign(self, values: NDArray[np.object_]) -> NDArray[np.intp]:
        """Value-bin index of each value, :data:`MISSING_CODE` for null (C-level lookups)."""
        codes = map(self._lookup.get, values.tolist(), repeat(self.new_index))
        return np.fromiter(codes, dtype=np.intp, count=values.size)

    def to_dict(self) -> dict[str, Any]:
        return {"categories": list(self.categories), "known": sorted(self.known)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CategoricalBins:
        categories = tuple(str(c) for c in data["categories"])
        known = frozenset(str(c) for c in data.get("known", categories)) | set(categories)
        if len(set(categories)) != len(categories):
            raise ReferenceError("categories must be unique")
        return cls(categories=categories, known=known)


def category_text(value: object) -> str:
    """A reference value as category text. A whole float is written as an integer: a file
    column of integer codes with a gap is read as floats, and serving apps send ``5411``
    or ``"5411"``, never ``"5411.0"``.

    >>> category_text(5411.0), category_text(2.5), category_text("FR")
    ('5411', '2.5', 'FR')
    """
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _ranked(values: NDArray[np.object_]) -> list[str]:
    """Distinct non-missing values as text, most frequent first, ties by name."""
    present = np.array([category_text(v) for v in values.tolist() if v is not None], dtype=object)
    if present.size == 0:
        return []
    uniq, counts = np.unique(present.astype(str), return_counts=True)
    order = np.lexsort((uniq, -counts))
    return [str(c) for c in uniq[order]]
