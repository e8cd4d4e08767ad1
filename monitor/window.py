"""Event-time tumbling panes summed into a sliding window, with a watermark.

Time is event time, in seconds. Pane ``i`` covers ``[i * pane, (i + 1) * pane)``. The
watermark is the largest event time seen minus ``allowed_lateness``; a pane *closes* when
the watermark reaches its end, and an event whose pane has closed is *late* (counted, not
added). The live window is the sum of the last ``size_panes`` closed panes: a pane is added
when it closes and subtracted when it falls out, so the window is never recomputed.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
from numpy.typing import NDArray

__all__ = ["Mergeable", "PaneWindow"]


class Mergeable(Protocol):
    """A pane value: panes are merged in place and expired by subtraction."""

    def __iadd__(self, other: Any, /) -> Any: ...
    def __isub__(self, other: Any, /) -> Any: ...


P = TypeVar("P", bound=Mergeable)


class PaneWindow(Generic[P]):
    """Open panes, closed panes still inside the window, and their running sum.

    >>> from collections import Counter
    >>> class Count:
    ...     def __init__(self): self.n = 0
    ...     def __iadd__(self, o): self.n += o.n; return self
    ...     def __isub__(self, o): self.n -= o.n; return self
    >>> w = PaneWindow(pane=10.0, size_panes=2, allowed_lateness=0.0, factory=Count)
    >>> for t in (1.0, 12.0, 15.0, 25.0):
    ...     w.pane(w.pane_index(t)).n += 1
    ...     _ = w.advance(t)
    >>> w.window.n, w.window_range()
    (3, (0.0, 20.0))
    >>> _ = w.advance(31.0); w.window.n, w.window_range()
    (3, (10.0, 30.0))
    """

    def __init__(
        self, pane: float, size_panes: int, allowed_lateness: float, factory: Callable[[], P]
    ) -> None:
        if pane <= 0 or size_panes < 1 or allowed_lateness < 0:
            raise ValueError("pane > 0, size_panes >= 1 and allowed_lateness >= 0 are required")
        self.pane_seconds = pane
        self.size_panes = size_panes
        self.allowed_lateness = allowed_lateness
        self._factory = factory
        self.watermark = -math.inf
        self.open: dict[int, P] = {}
        self.closed: deque[tuple[int, P]] = deque()
        self.window: P = factory()
        #: Index of the newest closed pane (``None`` before any pane closed).
        self.last_closed: int | None = None

    def pane_index(self, t: float) -> int:
        return math.floor(t / self.pane_seconds)

    def pane_indices(self, t: NDArray[np.float64]) -> NDArray[np.int64]:
        return np.floor(t / self.pane_seconds).astype(np.int64)

    def late_mask(self, panes: NDArray[np.int64]) -> NDArray[np.bool_]:
        """True for events whose pane already closed."""
        return (panes + 1) * self.pane_seconds <= self.watermark

    def pane(self, index: int) -> P:
        """The open pane ``index``, created empty on first use."""
        if (index + 1) * self.pane_seconds <= self.watermark:
            raise ValueError(f"pane {index} is closed")
        pane = self.open.get(index)
        if pane is None:
            pane = self.open[index] = self._factory()
        return pane

    def advance(self, max_event_time: float) -> list[tuple[int, P]]:
        """Move the watermark to ``max_event_time - allowed_lateness``; return the panes that
        closed, oldest first (including any that left the window in the same move)."""
        watermark = max_event_time - self.allowed_lateness
        if watermark <= self.watermark:
            return []
        self.watermark = watermark
        closing = [
            (i, self.open.pop(i))
            for i in sorted(i for i in self.open if (i + 1) * self.pane_seconds <= watermark)
        ]
        for i, pane in closing:
            self.window = self.window.__iadd__(pane)
            self.closed.append((i, pane))
        newest = math.floor(watermark / self.pane_seconds) - 1
        if self.last_closed is None or newest > self.last_closed:
            self.last_closed = newest
        while self.closed and self.closed[0][0] <= self.last_closed - self.size_panes:
            _, expired = self.closed.popleft()
            self.window = self.window.__isub__(expired)
        return closing

    def add_to_pane(self, index: int, value: P) -> bool:
        """Add ``value`` to pane ``index`` even after it closed (while it is in the window).

        Used for what arrives later but belongs to a pane's events, such as labels joined
        to its predictions. Returns False when the pane already left the window.
        """
        if (index + 1) * self.pane_seconds > self.watermark:
            pane = self.pane(index)
            pane = pane.__iadd__(value)
            return True
        for i, pane in self.closed:
            if i == index:
                pane.__iadd__(value)
                self.window = self.window.__iadd__(value)
                return True
        return False

    def snapshot(self, pane: Callable[[P], Any]) -> dict[str, Any]:
        """Plain data: watermark, open panes and the closed panes still in the window.

        The running sum is not stored: :meth:`restore` adds the closed panes up again.
        """
        return {
            "watermark": self.watermark,
            "last_closed": self.last_closed,
            "open": [[i, pane(p)] for i, p in sorted(self.open.items())],
            "closed": [[i, pane(p)] for i, p in self.closed],
        }

    def restore(self, data: Mapping[str, Any], pane: Callable[[Any], P]) -> None:
        """Replace this window's state with a :meth:`snapshot`."""
        self.watermark = float(data["watermark"])
        last = data["last_closed"]
        self.last_closed = None if last is None else int(last)
        self.open = {int(i): pane(p) for i, p in data["open"]}
        self.closed = deque((int(i), pane(p)) for i, p in data["closed"])
        self.window = self._factory()
        for _, p in self.closed:
            self.window = self.window.__iadd__(p)

    def window_range(self) -> tuple[float, float] | None:
        """Event-time ``[start, end)`` of the live window, once a pane has closed."""
        if self.last_closed is None:
            return None
        end = (self.last_closed + 1) * self.pane_seconds
        return (end - self.size_panes * self.pane_seconds, end)
