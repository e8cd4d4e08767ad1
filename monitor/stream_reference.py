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
    """Collects the first ``events`` events of a model version, then builds its profile.

    Memory is bounded by ``events`` rows. Events of other versions that arrive while a
    version is being collected are not part of that reference.
    """

    def __init__(
        self,
        model: str,
        events: int,
        specs: Sequence[FeatureSpec] | None = None,
        options: BinningOptions | None = None,
        segments: SegmentOptions | None = None,
    ) -> None:
        self.model = model
        self.segments = segments
        self.target = events
        self.specs = specs
        self.options = options or BinningOptions()
        self.version: str | None = None
        self._parts: list[EventBatch] = []
        self._collected = 0
        self.profiled_versions: set[str | None] = set()

    @property
    def collected(self) -> int:
        return self._collected

    def wants(self, batch: EventBatch) -> NDArray[np.bool_]:
        """Which events of ``batch`` belong to the reference being collected."""
        versions = batch.model_version
        if self.version is None and self._collected == 0:
            fresh = [v for v in dict.fromkeys(versions.tolist()) if v not in self.profiled_versions]
            if not fresh:
                return np.zeros(len(batch), dtype=bool)
            self.version = fresh[0]
        return np.asarray(versions == self.version, dtype=bool)

    def add(self, batch: EventBatch) -> ReferenceProfile | None:
        """Take the wanted events of ``batch``; return the profile once complete."""
        room = self.target - self._collected
        if room <= 0 or len(batch) == 0:
            return None
        if len(batch) > room:
            keep = np.zeros(len(batch), dtype=bool)
            keep[:room] = True
            batch = batch.select(keep)
        self._parts.append(batch)
        self._collected += len(batch)
        if self._collected < self.target:
            return None
        merged = _merge(self._parts)
        columns: dict[str, NDArray[Any]] = {**merged.categorical, **merged.numerical}
        if not self.specs:  # inferred: bounded, whatever the producers sent
            columns = inferred_columns(columns, len(merged))
        if np.isfinite(merged.score).any():
            columns[PREDICTION] = merged.score
        elif any(v is not None for v in merged.label.tolist()):
            columns[PREDICTION] = merged.label
        profile = build_profile(
            self.model, columns, self.specs, self.options, model_version=self.version
        )
        if self.segments is not None:
            tags = {f"{TAG_PREFIX}{k}": v for k, v in merged.tags.items()}
            profile = self.segments.apply(profile, {**merged.categorical, **tags, **columns})
        self.profiled_versions.add(self.version)
        self.version, self._parts, self._collected = None, [], 0
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
