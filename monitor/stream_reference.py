"""A reference built from the live stream: the first N events of each model version."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from monitor.events import MISMATCH, NONFINITE, EventBatch
from monitor.reference import PREDICTION, BinningOptions, ReferenceProfile, build_profile
from monitor.schema import FeatureKind, FeatureSpec
from monitor.segments import TAG_PREFIX, SegmentOptions

__all__ = ["MAX_INFERRED_FEATURES", "MAX_NAME_LENGTH", "StreamReference", "typed_batch"]

#: features a reference inferred from the stream keeps: those present in the most events
#: (a producer's junk keys in a few events do not become hundreds of features and series)
MAX_INFERRED_FEATURES = 200
#: longer feature names are never inferred as features (nor exported as label values)
MAX_NAME_LENGTH = 128


def inferred_columns(columns: dict[str, NDArray[Any]], n: int) -> dict[str, NDArray[Any]]:
    """The columns worth a feature: names of at most :data:`MAX_NAME_LENGTH` characters,
    present (non-missing) in at least 1% of the ``n`` events, the
    :data:`MAX_INFERRED_FEATURES` most present ones.

    >>> cols = {"a": np.array([1.0, 2.0]), "b" * 200: np.array([1.0, 1.0])}
    >>> list(inferred_columns(cols, 2))
    ['a']
    """

    def present(values: NDArray[Any]) -> int:
        if values.dtype.kind == "f":
            return int(np.count_nonzero(~np.isnan(values)))
        return int(np.count_nonzero(np.not_equal(values, np.array(None, dtype=object))))

    counts = {name: present(v) for name, v in columns.items() if len(name) <= MAX_NAME_LENGTH}
    keep = [name for name, c in counts.items() if c > 0 and c >= 0.01 * n]
    keep.sort(key=lambda name: -counts[name])
    chosen = set(keep[:MAX_INFERRED_FEATURES])
    return {name: v for name, v in columns.items() if name in chosen}


class StreamReference:
    """Collects the first ``events`` events of each model version, then builds its profile.

    Several versions are collected at once (a shadow challenger and a canary starting
    together each get theirs), at most ``concurrent`` of them; a version with no event for
    ``idle`` seconds gives its place up (its events are dropped), so versions seen once do
    not hold the places forever. Memory is bounded by ``events`` rows per place.
    """

    def __init__(
        self,
        model: str,
        events: int,
        specs: Sequence[FeatureSpec] | None = None,
        options: BinningOptions | None = None,
        segments: SegmentOptions | None = None,
        *,
        concurrent: int = 3,
        idle: float = 3600.0,
    ) -> None:
        self.model = model
        self.segments = segments
        self.target = events
        self.specs = specs
        self.options = options or BinningOptions()
        self.concurrent = max(concurrent, 1)
        self.idle = idle
        #: per version being collected: its batches, its events and when it last had some
        self._parts: dict[str | None, list[EventBatch]] = {}
        self._counts: dict[str | None, int] = {}
        self._seen: dict[str | None, float] = {}
        self.profiled_versions: set[str | None] = set()

    @property
    def collected(self) -> int:
        """Events of the version furthest along."""
        return max(self._counts.values(), default=0)

    @property
    def collecting(self) -> tuple[str | None, ...]:
        return tuple(self._counts)

    def take(
        self, batch: EventBatch, now: float | None = None
    ) -> tuple[NDArray[np.bool_], list[ReferenceProfile]]:
        """Take the events of ``batch`` that belong to a reference being collected (a
        version not profiled yet starts one when there is a place); return which were
        taken and the profiles completed."""
        versions = batch.model_version
        taken = np.zeros(len(batch), dtype=bool)
        if now is not None:
            for v in [v for v, t in self._seen.items() if now - t > self.idle]:
                del self._parts[v], self._counts[v], self._seen[v]
        done = []
        for v in dict.fromkeys(versions.tolist()):
            if v in self.profiled_versions:
                continue
            if v not in self._counts:
                if len(self._counts) >= self.concurrent:
                    continue
                self._parts[v], self._counts[v] = [], 0
            rows = np.flatnonzero(versions == v)[: self.target - self._counts[v]]
            taken[rows] = True
            if now is not None:
                self._seen[v] = now
            else:
                self._seen.setdefault(v, -np.inf)
            mine = np.zeros(len(batch), dtype=bool)
            mine[rows] = True
            profile = self._add(v, batch.select(mine))
            if profile is not None:
                done.append(profile)
        return taken, done

    def _add(self, version: str | None, batch: EventBatch) -> ReferenceProfile | None:
        self._parts[version].append(batch)
        self._counts[version] += len(batch)
        if self._counts[version] < self.target:
            return None
        merged = _merge(self._parts.pop(version))
        del self._counts[version], self._seen[version]
        self.profiled_versions.add(version)
        columns: dict[str, NDArray[Any]] = {**merged.categorical, **merged.numerical}
        if not self.specs:  # inferred: bounded, whatever the producers sent
            columns = inferred_columns(columns, len(merged))
        if np.isfinite(merged.score).any():
            columns[PREDICTION] = merged.score
        elif any(v is not None for v in merged.label.tolist()):
            columns[PREDICTION] = merged.label
        profile = build_profile(
            self.model, columns, self.specs, self.options, model_version=version
        )
        if self.segments is not None:
            tags = {f"{TAG_PREFIX}{k}": v for k, v in merged.tags.items()}
            profile = self.segments.apply(profile, {**merged.categorical, **tags, **columns})
        return profile


def _merge(parts: list[EventBatch]) -> EventBatch:
    names = {k for p in parts for k in p.categorical}
    for p in parts:  # a feature absent from one batch is missing there
        for k in names - p.categorical.keys():
            p.categorical[k] = np.full(len(p), None, dtype=object)
    return EventBatch.concat(parts)


def typed_batch(batch: EventBatch, specs: Sequence[FeatureSpec]) -> EventBatch:
    """Type the raw columns of a batch decoded while its model had no schema yet.

    Only the batch in which a stream reference completes goes through here, so the loop
    per value is bounded by one batch per model version. Values of the wrong type are
    flagged as mismatches, as the decoder would have flagged them.
    """
    n = len(batch)
    numerical: dict[str, NDArray[np.float64]] = {}
    categorical: dict[str, NDArray[np.object_]] = {}
    flags: dict[str, NDArray[np.int8]] = {}
    for spec in specs:
        raw = batch.categorical.get(spec.name)
        values = raw.tolist() if raw is not None else [None] * n
        if spec.kind is FeatureKind.NUMERICAL:
            ok = [
                v is None or (isinstance(v, int | float) and not isinstance(v, bool))
                for v in values
            ]
            numerical[spec.name] = np.array(
                [v if good else None for v, good in zip(values, ok, strict=True)], dtype=np.float64
            )
            bad = ~np.array(ok, dtype=bool)
        else:
            ok = [v is None or isinstance(v, str | int) for v in values]
            col = np.empty(n, dtype=object)
            col[:] = [v if good else None for v, good in zip(values, ok, strict=True)]
            categorical[spec.name] = col
            bad = ~np.array(ok, dtype=bool)
        nonfinite = np.zeros(n, dtype=bool)
        if spec.kind is FeatureKind.NUMERICAL:
            nonfinite = np.isinf(numerical[spec.name])
            numerical[spec.name][nonfinite] = np.nan
        if bad.any() or nonfinite.any():
            flags[spec.name] = np.where(bad, MISMATCH, np.where(nonfinite, NONFINITE, 0)).astype(
                np.int8
            )
    return EventBatch(
        model=batch.model,
        event_time=batch.event_time,
        event_id=batch.event_id,
        model_version=batch.model_version,
        numerical=numerical,
        categorical=categorical,
        score=batch.score,
        label=batch.label,
        latency_ms=batch.latency_ms,
        flags=flags,
        tags=batch.tags,
    )
