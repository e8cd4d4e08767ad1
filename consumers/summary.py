"""The one-line-per-model summary ``driftline run`` logs periodically, for a person
watching the terminal (the numbers themselves are on ``/metrics`` and the API)."""

from __future__ import annotations

from collections.abc import Mapping

from alerts.formats import rfc3339
from consumers.exporter import StateSnapshot

__all__ = ["summary_lines"]

#: drifted feature names shown before "and N more"
SHOWN = 5


def summary_lines(snapshot: StateSnapshot, before: Mapping[str, int] | None = None) -> list[str]:
    """One line per model: events (and how many since ``before``), the window, drifted
    features, label coverage, firing alerts.

    >>> from consumers.exporter import ModelCounters
    >>> summary_lines(StateSnapshot(version="x", counters={"m": ModelCounters(predictions=7)}))
    ['m: 7 events; not evaluated yet (no closed pane, or another instance owns it)']
    """
    firing: dict[str, int] = {}
    for (model, _, _), n in snapshot.alerts_firing.items():
        firing[model] = firing.get(model, 0) + n
    lines = []
    for model, c in sorted(snapshot.counters.items()):
        head = f"{model}: {c.predictions} events"
        if before is not None:
            head += f" (+{c.predictions - before.get(model, 0)})"
        ev = snapshot.evaluations.get(model)
        if ev is None:
            lines.append(f"{head}; not evaluated yet (no closed pane, or another instance owns it)")
            continue
        parts = [head]
        window = f"window {ev.window_events} events"
        if ev.window_start is not None and ev.window_end is not None:
            window += f" [{rfc3339(ev.window_start)} .. {rfc3339(ev.window_end)})"
        parts.append(window)
        drifted = list(ev.drifted_features)
        judged = sum(1 for f in ev.features if f.drifted is not None)
        if judged == 0:
            parts.append(f"drift not judged (fewer than {ev.min_events} events)")
        else:
            names = ", ".join(drifted[:SHOWN]) + (
                f" and {len(drifted) - SHOWN} more" if len(drifted) > SHOWN else ""
            )
            parts.append(f"drifted {len(drifted)}/{judged}" + (f" ({names})" if drifted else ""))
        if ev.label_coverage is not None:
            parts.append(f"label coverage {ev.label_coverage:.0%}")
        parts.append(f"alerts firing {firing.get(model, 0)}")
        lines.append("; ".join(parts))
    return lines
