"""The replay report: the web view's page over a whole replayed period, in one HTML file.

It holds, per model, every window's point (the charts of the web view, over the whole
period instead of the recent past), the last window's evaluation with its explanation, and
every alert transition the rules would have made. The page, script and charts are the
web view's (:mod:`consumers.web_view`), inlined: the file opens without a network.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from alerts.formats import rfc3339
from consumers.http_app import finite
from consumers.web_view import report
from monitor.evaluation import ModelEvaluation
from monitor.evaluation_history import evaluation_point
from monitor.window_log import AlertChange, LoggedWindow

__all__ = ["MAX_REPORT_POINTS", "ReplayReport", "alert_line", "downsampled"]

#: points a model's charts hold at most in a report: a week of 1-minute panes (10 080
#: windows) is shown as buckets of a few windows, so the file stays a few megabytes
MAX_REPORT_POINTS = 2000


def alert_line(a: AlertChange) -> dict[str, Any]:
    """An alert transition as replay output shows it."""
    value = a.value if math.isfinite(a.value) else None
    return {
        "alert": a.alert,
        "state": a.state,
        "at": rfc3339(a.at),
        "value": value,
        "labels": dict(a.labels),
    }


def downsampled(
    points: list[dict[str, Any]], limit: int = MAX_REPORT_POINTS
) -> list[dict[str, Any]]:
    """``points`` as at most ``limit`` points, each standing for a run of consecutive
    windows: from the first one's start to the last one's end; per feature, the score and
    threshold of the window where the score was largest against its threshold, and whether
    it drifted in any of them; the largest drifted-features ratio; the last window's
    events, performance and label coverage; and ``windows``, how many it stands for."""
    if len(points) <= limit:
        return points
    size = math.ceil(len(points) / limit)
    return [_bucket(points[i : i + size]) for i in range(0, len(points), size)]


def _bucket(run: list[dict[str, Any]]) -> dict[str, Any]:
    last = run[-1]
    features: dict[str, list[Any]] = {}
    for name in last["features"]:
        rows = [p["features"][name] for p in run if name in p["features"]]
        scored = [r for r in rows if r[0] is not None and math.isfinite(r[0])]
        verdicts = [r[2] for r in rows if r[2] is not None]
        drifted = any(verdicts) if verdicts else None
        if not scored:
            features[name] = [None, rows[-1][1], drifted]
            continue
        top = max(scored, key=lambda r: r[0] / r[1] if r[1] and r[1] > 0 else r[0])
        features[name] = [top[0], top[1], drifted]
    ratios = [p["drifted_features_ratio"] for p in run if p["drifted_features_ratio"] is not None]
    return {
        **last,
        "window_start": run[0]["window_start"],
        "drifted_features_ratio": max(ratios) if ratios else last["drifted_features_ratio"],
        "features": features,
        "windows": len(run),
    }


class ReplayReport:
    """Collects the logged windows of a replay, then writes the report."""

    def __init__(self) -> None:
        self.points: dict[str, list[dict[str, Any]]] = {}
        self.last: dict[str, ModelEvaluation] = {}
        self.alerts: list[dict[str, Any]] = []

    def add(self, logged: LoggedWindow) -> None:
        ev = logged.evaluation
        self.points.setdefault(ev.model, []).append(evaluation_point(ev))
        self.last[ev.model] = ev
        self.alerts.extend(alert_line(a) for a in logged.alerts)

    def html(self, tasks: Mapping[str, str], start: float | None, end: float | None) -> str:
        """The report of the models ``tasks`` names, over event time ``start`` to ``end``."""
        return report(self.data(tasks, start, end))

    def data(
        self, tasks: Mapping[str, str], start: float | None, end: float | None
    ) -> dict[str, Any]:
        """The report's data, as the page's script reads it."""
        period = "no events"
        if start is not None and end is not None:
            period = f"event time {rfc3339(start)} to {rfc3339(end)}"
        models = [
            {
                "model": name,
                "task": task,
                "evaluation": self.last[name].to_dict() if name in self.last else None,
                "history": downsampled(self.points.get(name, [])),
            }
            for name, task in tasks.items()
        ]
        return {
            "mode": "report",
            "period": period,
            "generated_at": rfc3339(datetime.now(UTC).timestamp()),
            "models": finite(models),
            "alert_changes": finite(sorted(self.alerts, key=lambda a: a["at"])),
        }
