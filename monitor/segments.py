"""Segments: a model's windows sliced by categorical fields, top-K values plus "other".

A segment field is a categorical feature or an event tag (``tags.region``). Its segments
are the ``top_k`` most frequent values of the field in the reference, then "other" (every
other value, a missing one included), so a stream with a million distinct values still has
``top_k + 1`` segments and as many series.

Each segment is one more *block* of a model's pane vector (block 0 is the whole model),
binned with the model's own bins, so a segmented pane is still one vector that adds,
expires, merges across partitions and is checkpointed like any other. A segment is compared
with the reference rows of the same segment (its *slice*) when the reference holds enough
of them, else with the whole reference.

>>> cols = {"c": np.array(["a", "b", "a", "z", None], dtype=object)}
>>> f = SegmentField.from_reference("c", cols["c"], top_k=1)
>>> f.labels, f.codes(np.array(["a", "b", None, "a"], dtype=object)).tolist()
(('c=a', 'c=other'), [0, 1, 1, 0])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import repeat
from typing import Any

import numpy as np
from numpy.typing import NDArray

from monitor.binning import category_text
from monitor.events import EventBatch
from monitor.exceptions import ReferenceError
from monitor.reference import PREDICTION, FeatureProfile, ReferenceProfile, recount

__all__ = [
    "MAX_VALUE_LENGTH",
    "OTHER",
    "TAG_PREFIX",
    "SegmentField",
    "SegmentOptions",
    "Segments",
    "build_segments",
]

#: the segment of every value outside a field's top K
OTHER = "other"
#: values longer than this are never a segment of their own (label values stay short)
MAX_VALUE_LENGTH = 64
#: prefix of a field that names an event tag
TAG_PREFIX = "tags."


@dataclass(frozen=True)
class SegmentField:
    """One field's segments: its top values in the reference, then "other"."""

    name: str
    values: tuple[str, ...]
    _lookup: dict[object, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        lookup: dict[object, int] = {v: i for i, v in enumerate(self.values)}
        # serving apps send integer codes as JSON numbers; a reference file reads them as text
        for v, i in list(lookup.items()):
            if isinstance(v, str) and v.lstrip("-").isdigit():
                lookup.setdefault(int(v), i)
        object.__setattr__(self, "_lookup", lookup)

    @classmethod
    def from_reference(cls, name: str, column: NDArray[Any], top_k: int) -> SegmentField:
        """The ``top_k`` most frequent values of a reference column (ties by value)."""
        text = [None if v is None or v != v else category_text(v) for v in column.tolist()]
        kept = np.array([v for v in text if v is not None and len(v) <= MAX_VALUE_LENGTH])
        if kept.size == 0:
            return cls(name, ())
        values, counts = np.unique(kept, return_counts=True)
        order = np.lexsort((values, -counts))[:top_k]
        return cls(name, tuple(str(v) for v in values[order]))

    @property
    def size(self) -> int:
        """Segments of this field, "other" included."""
        return len(self.values) + 1

    @property
    def other(self) -> str:
        """The "other" segment's name: ``other``, put in parentheses until no reference value
        is spelt the same (a category really called "other" keeps its own segment)."""
        name = OTHER
        while name in self.values:
            name = f"({name})"
        return name

    @property
    def labels(self) -> tuple[str, ...]:
        """``field=value`` of each segment, in code order."""
        return tuple(f"{self.name}={v}" for v in (*self.values, self.other))

    def codes(self, column: NDArray[Any]) -> NDArray[np.intp]:
        """Each value's segment: its rank among the top values, ``len(values)`` for other
        (dictionary lookups at C level, no Python loop)."""
        other = len(self.values)
        found = map(self._lookup.get, column.tolist(), repeat(other))
        return np.fromiter(found, dtype=np.intp, count=column.size)

    def column_of(self, batch: EventBatch) -> NDArray[np.object_]:
        """This field's values in ``batch`` (``None`` where an event has none)."""
        if self.name.startswith(TAG_PREFIX):
            col = batch.tags.get(self.name[len(TAG_PREFIX) :])
        else:
            col = batch.categorical.get(self.name)
        return np.full(len(batch), None, dtype=object) if col is None else col


#: one segment's reference: its features' profiles and its prediction's, or ``None`` for
#: the whole reference
Slice = tuple[tuple[FeatureProfile, ...], FeatureProfile | None] | None


@dataclass(frozen=True)
class Segments:
    """The segment fields of a model and the reference each of its segments is judged by.

    Segments are numbered 1.. (block 0 is the whole model), field after field.
    """

    fields: tuple[SegmentField, ...]
    #: per segment, in block order: its reference slice, or ``None`` (the whole reference)
    slices: tuple[Slice, ...]
    #: per segment: its share of the reference rows
    reference_share: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.slices) != self.size or len(self.reference_share) != self.size:
            raise ReferenceError("segments: one slice and one share per segment are required")
        if math.prod(f.size for f in self.fields) >= 2**52:
            raise ReferenceError("segments: too many combinations of segment values")

    @property
    def size(self) -> int:
        """Segments of every field."""
        return sum(f.size for f in self.fields)

    @property
    def names(self) -> tuple[str, ...]:
        """Each segment's label value (``field=value``), in block order."""
        return tuple(label for f in self.fields for label in f.labels)

    @property
    def offsets(self) -> tuple[int, ...]:
        """Block of each field's first segment."""
        out, block = [], 1
        for f in self.fields:
            out.append(block)
            block += f.size
        return tuple(out)

    def blocks(self, batch: EventBatch) -> NDArray[np.intp]:
        """Shape ``(fields, events)``: each event's segment block under each field."""
        rows = [
            offset + f.codes(f.column_of(batch))
            for f, offset in zip(self.fields, self.offsets, strict=True)
        ]
        return np.stack(rows) if rows else np.empty((0, len(batch)), dtype=np.intp)

    def cells(self, batch: EventBatch) -> NDArray[np.float64]:
        """One number per event naming its segment under every field (mixed radix), which
        a prediction keeps while it waits for its label; :meth:`blocks_of_cells` reads it."""
        cell = np.zeros(len(batch), dtype=np.int64)
        stride = 1
        for f in self.fields:
            cell += f.codes(f.column_of(batch)) * stride
            stride *= f.size
        return cell.astype(np.float64)

    def blocks_of_cells(self, cells: NDArray[np.float64]) -> NDArray[np.intp]:
        """Shape ``(fields, n)`` blocks of :meth:`cells` values; -1 for NaN (a prediction
        pended before its model was segmented) or a value out of range."""
        ok = np.isfinite(cells) & (cells >= 0) & (cells < math.prod(f.size for f in self.fields))
        rest = np.where(ok, cells, 0).astype(np.int64)
        rows = []
        for f, offset in zip(self.fields, self.offsets, strict=True):
            rows.append(np.where(ok, offset + rest % f.size, -1))
            rest //= f.size
        if not rows:
            return np.empty((0, cells.size), dtype=np.intp)
        return np.stack(rows).astype(np.intp)

    def profile(self, whole: ReferenceProfile, segment: int) -> ReferenceProfile:
        """The reference segment ``segment`` (0-based, block - 1) is compared with."""
        sl = self.slices[segment]
        if sl is None:
            return replace(whole, segments=None)
        features, prediction = sl
        return replace(whole, features=features, prediction=prediction, segments=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "fields": [{"name": f.name, "values": list(f.values)} for f in self.fields],
            "reference_share": list(self.reference_share),
            "slices": [
                None
                if s is None
                else {
                    "features": [fp.to_dict() for fp in s[0]],
                    "prediction": None if s[1] is None else s[1].to_dict(),
                }
                for s in self.slices
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Segments:
        try:
            fields = tuple(
                SegmentField(str(f["name"]), tuple(str(v) for v in f["values"]))
                for f in data["fields"]
            )
            slices: list[Slice] = []
            for s in data["slices"]:
                if s is None:
                    slices.append(None)
                    continue
                pred = s.get("prediction")
                slices.append(
                    (
                        tuple(FeatureProfile.from_dict(fp) for fp in s["features"]),
                        None if pred is None else FeatureProfile.from_dict(pred),
                    )
                )
            share = tuple(float(x) for x in data["reference_share"])
            return cls(fields, tuple(slices), share)
        except (KeyError, TypeError, ValueError) as exc:
            raise ReferenceError(f"invalid segments: {exc!r}") from exc


def build_segments(
    whole: ReferenceProfile,
    columns: Mapping[str, NDArray[Any]],
    fields: Sequence[str],
    top_k: int,
    *,
    by_slice: bool = True,
    min_reference_events: int = 100,
) -> Segments:
    """The segments of ``fields`` over the reference ``columns`` ``whole`` was built from.

    With ``by_slice``, a segment with at least ``min_reference_events`` reference rows is
    judged against a profile of those rows, counted in the whole reference's bins (so its
    panes add up with the model's); every other segment against the whole reference.
    """
    made: list[SegmentField] = []
    slices: list[Slice] = []
    share: list[float] = []
    for name in fields:
        column = columns.get(name)
        if column is None:
            raise ReferenceError(f"segment field {name!r} is not a column of the reference")
        column = np.asarray(column, dtype=object)
        try:
            if whole.feature(name).kind.value != "categorical":
                raise ReferenceError(f"segment field {name!r} is numerical, not categorical")
        except KeyError:
            pass
        f = SegmentField.from_reference(name, column, top_k)
        made.append(f)
        codes = f.codes(
            np.array([None if v is None else str(v) for v in column.tolist()], dtype=object)
        )
        n = max(codes.size, 1)
        for code in range(f.size):
            mask = codes == code
            rows = int(mask.sum())
            share.append(rows / n)
            if not by_slice or rows < min_reference_events:
                slices.append(None)
                continue
            features = tuple(
                recount(fp, np.asarray(columns[fp.name])[mask]) for fp in whole.features
            )
            pred = None
            if whole.prediction is not None and PREDICTION in columns:
                pred = recount(whole.prediction, np.asarray(columns[PREDICTION])[mask])
            slices.append((features, pred))
    return Segments(tuple(made), tuple(slices), tuple(share))


@dataclass(frozen=True)
class SegmentOptions:
    """How a model is segmented: its fields and how their segments are cut and judged."""

    fields: tuple[str, ...]
    top_k: int = 10
    by_slice: bool = True
    min_reference_events: int = 100

    @property
    def tags(self) -> tuple[str, ...]:
        """The event tags the fields name (without ``tags.``)."""
        return tuple(f[len(TAG_PREFIX) :] for f in self.fields if f.startswith(TAG_PREFIX))

    def apply(
        self, profile: ReferenceProfile, columns: Mapping[str, NDArray[Any]]
    ) -> ReferenceProfile:
        """``profile`` (built from ``columns``) with its segments."""
        if not self.fields:
            return profile
        segments = build_segments(
            profile,
            columns,
            self.fields,
            self.top_k,
            by_slice=self.by_slice,
            min_reference_events=self.min_reference_events,
        )
        return replace(profile, segments=segments)
