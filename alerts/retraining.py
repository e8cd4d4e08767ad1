"""When to ask for a retraining: a pure policy per ``retraining:`` entry, clock passed in.

An alert of ``on_alerts`` that starts firing for the entry's model requests a retraining,
unless the last request is more recent than ``cooldown`` or ``max_per_day`` requests were
made in the last 24 hours (a rolling day, so a burst cannot straddle midnight); a trigger
suppressed that way is not queued. Alerts starting to fire in the same evaluation make
one request. The optional cron ``schedule`` (UTC) requests a retraining regardless of
alerts and of the limits; scheduled requests still count towards them, so an alert
right after a scheduled run does not request another one.

>>> from monitor.config import RetrainingSettings
>>> s = RetrainingSettings.model_validate({"model": "m", "schedule": "0 3 * * *",
...     "target": {"type": "http", "url": "http://ci/retrain"}})
>>> p = RetrainingPolicy(s, now=0.0)          # 1970-01-01T00:00Z
>>> p.due(2 * 3600.0), p.due(3 * 3600.0), p.due(4 * 3600.0)
(False, True, False)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from alerts.rules import Alert, AlertState, Transition
from monitor.config import RetrainingSettings, parse_cron

__all__ = ["RetrainingPolicy", "RetrainingTrigger", "next_cron_time"]

_DAY = 86400.0
_FULL_DOM = frozenset(range(1, 32))
_FULL_DOW = frozenset(range(7))


@dataclass(frozen=True)
class RetrainingTrigger:
    """A decision to request a retraining of ``model`` at ``at``."""

    model: str
    reason: str
    alerts: tuple[Alert, ...]
    at: float
    scheduled: bool


def next_cron_time(fields: tuple[frozenset[int], ...], after: float) -> float:
    """The first minute strictly after ``after`` (epoch seconds) that the parsed cron
    ``fields`` (see :func:`monitor.config.parse_cron`) match, in UTC. As in cron, when both
    day of month and day of week are restricted, a day matching either one matches.

    >>> next_cron_time(parse_cron("30 3 * * *"), 0.0) / 3600
    3.5
    >>> next_cron_time(parse_cron("0 0 31 2 *"), 0.0)
    Traceback (most recent call last):
    ValueError: the cron schedule matches no date
    """
    minutes, hours, doms, months, dows = fields
    t = datetime.fromtimestamp(after, UTC).replace(second=0, microsecond=0)
    t += timedelta(minutes=1)
    last_year = t.year + 8  # a 29 February schedule matches once in 4 (or 8) years
    while t.year <= last_year:
        if t.month not in months:
            t = (t.replace(day=1, hour=0, minute=0) + timedelta(days=32)).replace(day=1)
        elif not _day_matches(t, doms, dows):
            t = t.replace(hour=0, minute=0) + timedelta(days=1)
        elif t.hour not in hours:
            t = t.replace(minute=0) + timedelta(hours=1)
        elif t.minute not in minutes:
            t += timedelta(minutes=1)
        else:
            return t.timestamp()
    raise ValueError("the cron schedule matches no date")


def _day_matches(t: datetime, doms: frozenset[int], dows: frozenset[int]) -> bool:
    dom, dow = t.day in doms, t.isoweekday() % 7 in dows  # cron's Sunday is 0
    if doms == _FULL_DOM:
        return dow
    if dows == _FULL_DOW:
        return dom
    return dom or dow


class RetrainingPolicy:
    """The retraining decisions of one ``retraining:`` entry."""

    def __init__(self, settings: RetrainingSettings, *, now: float) -> None:
        self.settings = settings
        self._cron = parse_cron(settings.schedule) if settings.schedule else None
        if self._cron is not None:
            try:
                next_cron_time(self._cron, now)
            except ValueError:
                raise ValueError(
                    f"retraining schedule {settings.schedule!r} of model {settings.model!r} "
                    "matches no date"
                ) from None
        self._history: list[float] = []  # request times in the last day, oldest first
        self._checked_until = now

    def allows(self, now: float) -> bool:
        """Whether cooldown and the daily maximum allow an alert-triggered request now."""
        self._history = [t for t in self._history if now - t < _DAY]
        if self._history and now - self._history[-1] < self.settings.cooldown:
            return False
        return len(self._history) < self.settings.max_per_day

    def on_transitions(
        self, transitions: Iterable[Transition], now: float
    ) -> RetrainingTrigger | None:
        """A request when one of ``on_alerts`` started firing for this model and the limits
        allow it; ``None`` otherwise."""
        s = self.settings
        alerts = tuple(
            t.alert
            for t in transitions
            if t.new is AlertState.FIRING
            and t.old is not AlertState.FIRING
            and t.alert.name in s.on_alerts
            and t.alert.model == s.model
        )
        if not alerts or not self.allows(now):
            return None
        self._history.append(now)
        reason = "alerts: " + ", ".join(sorted({a.name for a in alerts}))
        return RetrainingTrigger(s.model, reason, alerts, now, scheduled=False)

    def due(self, now: float) -> bool:
        """Whether the schedule passed a run since the last check (runs missed while the
        service was down make one run); the check then moves on to ``now``."""
        if self._cron is None or now <= self._checked_until:
            return False
        due = next_cron_time(self._cron, self._checked_until) <= now
        self._checked_until = now
        return due

    def on_schedule(self, now: float) -> RetrainingTrigger | None:
        """A scheduled request when :meth:`due`; ``None`` otherwise."""
        if not self.due(now):
            return None
        self._history.append(now)
        reason = f"schedule: {self.settings.schedule}"
        return RetrainingTrigger(self.settings.model, reason, (), now, scheduled=True)

    def snapshot(self) -> dict[str, Any]:
        return {"version": 1, "history": list(self._history), "checked_until": self._checked_until}

    def restore(self, data: Mapping[str, Any]) -> None:
        if data.get("version") != 1:
            raise ValueError(f"unknown retraining snapshot version {data.get('version')!r}")
        self._history = sorted(float(t) for t in data["history"])
        self._checked_until = float(data["checked_until"])
