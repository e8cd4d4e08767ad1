"""Stage 2 of the scale-out: one model's panes from every source partition, merged.

Stage 1 keeps one window per input partition and publishes each pane when it closes (and
again when late labels change it) as a :class:`PaneUpdate`, together with the partition's
watermark. Stage 2 keeps the newest version of every ``(pane, source partition)`` and adds
the panes **aligned by pane index in event time**: the merged window ``(last_closed - size,
last_closed]`` takes pane ``i`` of every partition, whatever each partition's own progress.

The merged watermark is the minimum over the source partitions that saw an event of the
model within ``idle_timeout`` (all of them when none did), as Flink's idle sources; it never
moves back. Updates are idempotent: a replayed, duplicated or reordered update changes
nothing unless its version is at least the one held (last writer wins by version), so the
merged window depends only on the newest state of each pane.

>>> import numpy as np
>>> from monitor.panes import PaneCounts
>>> def pane(n): return PaneCounts(n, np.array([n]), np.array([float(n)]))
>>> m = PaneMerge(pane_seconds=10.0, size_panes=2, idle_timeout=60.0)
>>> _ = m.apply(PaneUpdate("m", 0, 5, 30.0, 2, 0.0, "f", ((1, pane(3)), (2, pane(4)))))
>>> _ = m.apply(PaneUpdate("m", 1, 9, 40.0, 3, 0.0, "f", ((2, pane(1)), (3, pane(7)))))
>>> _ = m.advance(now=1.0)
>>> m.last_closed, m.window_range(), m.window(lambda: PaneCounts.zeros(1)).events
(2, (10.0, 30.0), 8)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from monitor.panes import PaneCounts

__all__ = ["PaneMerge", "PaneUpdate", "SourceState"]


@dataclass(frozen=True)
class PaneUpdate:
    """What one source partition publishes about one model.

    ``(epoch, version)`` orders the updates of a partition: ``version`` is the source
    offsets they reflect, and ``epoch`` grows each time the partition's state is restored
    or rebuilt (a replay is a new history whose states replace the old one's);
    ``panes`` are closed panes, new or changed, as ``(pane index, counts)``; ``active_at``
    is the wall-clock time of the partition's last event of the model; ``fingerprint``
    names the reference the counts were binned against. ``profile`` carries a reference
    built from the stream (plain data), so that stage 2 can bin nothing but still evaluate.
    ``model_version`` names the version whose own window this is (``None``: the model's).
    """

    model: str
    partition: int
    version: int
    watermark: float
    last_closed: int | None
    active_at: float
    fingerprint: str
    panes: tuple[tuple[int, PaneCounts], ...] = ()
    profile: Mapping[str, Any] | None = None
    epoch: int = 0
    model_version: str | None = None

    @property
    def order(self) -> tuple[int, int]:
        return (self.epoch, self.version)


@dataclass
class SourceState:
    version: tuple[int, int]
    watermark: float
    last_closed: int | None
    active_at: float


#: memory bounds: source partitions per model, and panes held per source partition (a
#: partition more than a few windows ahead of the slowest live one has panes refused)
MAX_SOURCES = 4096


class PaneMerge:
    """The newest panes of every source partition of one model, and their window."""

    def __init__(self, pane_seconds: float, size_panes: int, idle_timeout: float) -> None:
        self.max_panes_per_source = 4 * size_panes + 16
        #: updates or panes refused by the memory bounds
        self.refused = 0
        self._held: dict[int, int] = {}  # panes held per source partition
        self.pane_seconds = pane_seconds
        self.size_panes = size_panes
        self.idle_timeout = idle_timeout
        self.sources: dict[int, SourceState] = {}
        #: (pane index, source partition) -> ((epoch, version), counts)
        self.panes: dict[tuple[int, int], tuple[tuple[int, int], PaneCounts]] = {}
        #: newest merged closed pane; never moves back
        self.last_closed: int | None = None
        self.watermark = -math.inf

    def apply(self, update: PaneUpdate) -> bool:
        """Take ``update`` where it is at least as new as what is held; True if it changed
        a pane of the current window (one past the last closed pane changes no evaluation
        until the window reaches it, and :meth:`advance` says when it does)."""
        order = update.order
        src = self.sources.get(update.partition)
        if src is None and len(self.sources) >= MAX_SOURCES:
            self.refused += 1
            return False
        if src is None or order >= src.version:
            self.sources[update.partition] = SourceState(
                order, update.watermark, update.last_closed, update.active_at
            )
        changed = False
        floor = self._floor()
        for index, counts in update.panes:
            if index <= floor:
                continue  # already out of the merged window
            key = (index, update.partition)
            held = self.panes.get(key)
            if held is None:
                n = self._held.get(update.partition, 0)
                if n >= self.max_panes_per_source:
                    self.refused += 1
                    continue
                self._held[update.partition] = n + 1
            if held is None or order >= held[0]:
                self.panes[key] = (order, counts)
                changed |= self.last_closed is not None and index <= self.last_closed
        return changed

    def _floor(self) -> float:
        """Panes at or below this index have left the merged window for good."""
        return -math.inf if self.last_closed is None else self.last_closed - self.size_panes

    def advance(self, now: float) -> bool:
        """Recompute the merged watermark at wall-clock ``now``; True when the window moved."""
        if not self.sources:
            return False
        active = [s for s in self.sources.values() if now - s.active_at < self.idle_timeout]
        pool = active or list(self.sources.values())
        self.watermark = max(self.watermark, min(s.watermark for s in pool))
        closed = [s.last_closed for s in pool]
        if any(c is None for c in closed):
            return False  # a live partition has not closed a pane yet: wait for it
        candidate = min(c for c in closed if c is not None)
        if self.last_closed is not None and candidate <= self.last_closed:
            return False
        self.last_closed = candidate
        floor = self._floor()
        for key in [k for k in self.panes if k[0] <= floor]:
            del self.panes[key]
            self._held[key[1]] -= 1
        return True

    def window(self, zeros: Callable[[], PaneCounts]) -> PaneCounts:
        """Sum of every partition's panes in the window, added in a fixed order."""
        total = zeros()
        if self.last_closed is None:
            return total
        floor = self._floor()
        for key in sorted(self.panes):
            if floor < key[0] <= self.last_closed:
                total += self.panes[key][1]
        return total

    def window_range(self) -> tuple[float, float] | None:
        if self.last_closed is None:
            return None
        end = (self.last_closed + 1) * self.pane_seconds
        return (end - self.size_panes * self.pane_seconds, end)

    def snapshot(self) -> dict[str, Any]:
        """Plain data that :meth:`restore` reads back."""
        return {
            "last_closed": self.last_closed,
            "watermark": self.watermark,
            "sources": [
                [p, list(s.version), s.watermark, s.last_closed, s.active_at]
                for p, s in sorted(self.sources.items())
            ],
            "panes": [
                [index, partition, list(version), counts.snapshot()]
                for (index, partition), (version, counts) in sorted(self.panes.items())
            ],
        }

    def restore(self, data: Mapping[str, Any], size: int, extra: int) -> None:
        """Replace the state with a :meth:`snapshot` (``ValueError`` if it does not fit)."""
        panes = {
            (int(i), int(p)): ((int(v[0]), int(v[1])), PaneCounts.restore(c, size, extra))
            for i, p, v, c in data["panes"]
        }
        sources = {
            int(p): SourceState(
                (int(v[0]), int(v[1])), float(w), None if lc is None else int(lc), float(a)
            )
            for p, v, w, lc, a in data["sources"]
        }
        last = data["last_closed"]
        self.panes, self.sources = panes, sources
        self._held = {}
        for _, p in panes:
            self._held[p] = self._held.get(p, 0) + 1
        self.last_closed = None if last is None else int(last)
        self.watermark = float(data["watermark"])
