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

__all__ = ["ReplayReport", "alert_line"]


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
                "history": self.points.get(name, []),
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
