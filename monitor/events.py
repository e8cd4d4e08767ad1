"""A decoded batch of prediction events of one model, as numpy columns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

__all__ = ["MAX_VERSION_LENGTH", "MISMATCH", "NONFINITE", "OK", "EventBatch"]

#: Per-value flags, kept only for features where some value was not usable as is.
OK, MISMATCH, NONFINITE = 0, 1, 2
#: a longer ``model_version`` is refused: it becomes a label value and is kept with every
#: pending prediction
MAX_VERSION_LENGTH = 128


@dataclass
class EventBatch:
    """Columns of ``n`` prediction events of one model.

    Numerical features are float64 with NaN for a missing value; categorical features are
    object arrays of ``str``/``int`` with ``None`` for missing. A value of the wrong type
    (a string for a numerical feature, say) or a NaN/infinity is stored as missing and
    flagged in ``flags[feature]`` (``MISMATCH`` or ``NONFINITE``), so quality can count it.
    """

    model: str
    event_time: NDArray[np.float64]
    event_id: list[str]
    model_version: NDArray[np.object_]
    numerical: dict[str, NDArray[np.float64]]
    categorical: dict[str, NDArray[np.object_]]
    score: NDArray[np.float64]
    label: NDArray[np.object_]
    latency_ms: NDArray[np.float64]
    flags: dict[str, NDArray[np.int8]] = field(default_factory=dict)
    #: event tags the model slices by (``tags.region`` -> ``tags["region"]``), object arrays
    #: of ``str`` with ``None`` where an event has no such tag
    tags: dict[str, NDArray[np.object_]] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.event_time.size)

    def select(self, mask: NDArray[np.bool_]) -> EventBatch:
        """The events where ``mask`` is true."""
        ids = [e for e, keep in zip(self.event_id, mask.tolist(), strict=True) if keep]
        return EventBatch(
            model=self.model,
            event_time=self.event_time[mask],
            event_id=ids,
            model_version=self.model_version[mask],
            numerical={k: v[mask] for k, v in self.numerical.items()},
            categorical={k: v[mask] for k, v in self.categorical.items()},
            score=self.score[mask],
            label=self.label[mask],
            latency_ms=self.latency_ms[mask],
            flags={k: v[mask] for k, v in self.flags.items()},
            tags={k: v[mask] for k, v in self.tags.items()},
        )

    @staticmethod
    def concat(batches: list[EventBatch]) -> EventBatch:
        """One batch holding the events of ``batches`` in order (all of one model)."""
        first = batches[0]
        return EventBatch(
            model=first.model,
            event_time=np.concatenate([b.event_time for b in batches]),
            event_id=[e for b in batches for e in b.event_id],
            model_version=np.concatenate([b.model_version for b in batches]),
            numerical={
                k: np.concatenate([b.numerical[k] for b in batches]) for k in first.numerical
            },
            categorical={
                k: np.concatenate([b.categorical[k] for b in batches]) for k in first.categorical
            },
            score=np.concatenate([b.score for b in batches]),
            label=np.concatenate([b.label for b in batches]),
            latency_ms=np.concatenate([b.latency_ms for b in batches]),
            flags={
                k: np.concatenate(
                    [b.flags.get(k, np.zeros(len(b), dtype=np.int8)) for b in batches]
                )
                for k in {k for b in batches for k in b.flags}
            },
            tags={
                k: np.concatenate(
                    [b.tags.get(k, np.full(len(b), None, dtype=object)) for b in batches]
                )
                for k in {k for b in batches for k in b.tags}
            },
        )
