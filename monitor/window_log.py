"""One record per window a model was evaluated on, as a replay writes them.

The service evaluates a model's window each time it moves (a pane closed) and again when
late labels change a pane still in it; ``/metrics`` always shows the newest evaluation.
:class:`WindowLog` keeps that newest evaluation of each model's live window, with the
alert transitions that happened while it was live, and hands it out when the
window moves on (or at the end): one record per window position.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from monitor.evaluation import ModelEvaluation

__all__ = ["AlertChange", "LoggedWindow", "WindowLog"]


@dataclass(frozen=True)
class AlertChange:
    """An alert instance started firing or resolved (what a sink would have been sent)."""

    model: str
    alert: str
    state: str
    at: float
    value: float
    labels: Mapping[str, str]


@dataclass
class LoggedWindow:
    """A window's newest evaluation and the alert changes while it was live."""

    evaluation: ModelEvaluation
    alerts: list[AlertChange] = field(default_factory=list)


class WindowLog:
    """The newest evaluation of each model's live window, until the window moves."""

    def __init__(self) -> None:
        self._live: dict[str, LoggedWindow] = {}

    def evaluated(self, ev: ModelEvaluation) -> LoggedWindow | None:
        """Take a model's newest evaluation; return its previous window when this one is
        another (the window moved on)."""
        live = self._live.get(ev.model)
        if live is not None and _span(live.evaluation) == _span(ev):
            live.evaluation = ev  # the same window, evaluated again (late labels)
            return None
        self._live[ev.model] = LoggedWindow(ev)
        return live

    def alerted(self, changes: Iterable[AlertChange]) -> None:
        """Alert changes, each kept with the live window of its model."""
        for change in changes:
            live = self._live.get(change.model)
            if live is not None:
                live.alerts.append(change)

    def close(self) -> list[LoggedWindow]:
        """The windows still live, in event-time order."""
        out = sorted(self._live.values(), key=_order)
        self._live.clear()
        return out


def _span(ev: ModelEvaluation) -> tuple[float | None, float | None]:
    return (ev.window_start, ev.window_end)


def _order(logged: LoggedWindow) -> tuple[float, str]:
    end = logged.evaluation.window_end
    return (-float("inf") if end is None else end, logged.evaluation.model)
