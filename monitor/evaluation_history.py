"""Recent evaluations of a model, as small points for charts: bounded in count and in bytes.

A point keeps what a chart over time shows of one window position: each feature's score,
threshold and verdict, realized and estimated performance, label coverage. A window
evaluated again (late labels changed one of its panes) replaces its point. The oldest
points go first when either bound is reached; a point's size is the length of its JSON
text, which is what a reader is sent.

>>> h = EvaluationHistory(max_points=2, max_bytes=10_000)
>>> for end in (10.0, 20.0, 20.0, 30.0):
...     h.add({"window_end": end})
>>> [p["window_end"] for p in h.points()]
[20.0, 30.0]
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping
from typing import Any

from monitor.evaluation import ModelEvaluation

__all__ = ["MAX_BYTES", "MAX_POINTS", "EvaluationHistory", "evaluation_point"]

#: points kept per model: 12 hours of one-minute panes
MAX_POINTS = 720
#: bytes kept per model (JSON text of the points)
MAX_BYTES = 1 << 20


def evaluation_point(ev: ModelEvaluation) -> dict[str, Any]:
    """What a chart over time reads of one evaluation (NaN stays NaN: readers decide).

    ``features`` maps each feature to ``[score, threshold, drifted]`` of its deciding method
    (``drifted`` is null without a verdict).
    """
    features = {}
    for f in ev.features:
        d = f.decision
        features[f.name] = [d.score if d is not None else None, f.threshold, f.drifted]
    return {
        "window_start": ev.window_start,
        "window_end": ev.window_end,
        "evaluated_at": ev.evaluated_at,
        "events": ev.window_events,
        "drifted_features_ratio": ev.drifted_features_ratio,
        "features": features,
        "performance": dict(ev.performance),
        "estimated": dict(ev.estimated),
        "label_coverage": ev.label_coverage,
    }


class EvaluationHistory:
    """The newest points of one model, at most ``max_points`` and ``max_bytes``."""

    def __init__(self, max_points: int = MAX_POINTS, max_bytes: int = MAX_BYTES) -> None:
        if max_points < 1 or max_bytes < 1:
            raise ValueError("a history keeps at least one point and one byte")
        self.max_points, self.max_bytes = max_points, max_bytes
        self._points: deque[tuple[Mapping[str, Any], int]] = deque()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._points)

    def add(self, point: Mapping[str, Any]) -> None:
        """Append ``point``, or replace the newest one when it is of the same window."""
        size = len(json.dumps(point, default=str))
        if self._points and _span(self._points[-1][0]) == _span(point):
            self.bytes -= self._points.pop()[1]
        self._points.append((point, size))
        self.bytes += size
        while len(self._points) > self.max_points or (
            self.bytes > self.max_bytes and len(self._points) > 1
        ):
            self.bytes -= self._points.popleft()[1]

    def points(self) -> list[Mapping[str, Any]]:
        """The points, oldest first."""
        return [p for p, _ in self._points]


def _span(point: Mapping[str, Any]) -> tuple[Any, Any]:
    return (point.get("window_start"), point.get("window_end"))
