"""Alert rules as pure state machines, evaluated the way Prometheus evaluates alerting rules.

Each :class:`~monitor.config.AlertRule` selects the samples of one metric whose labels
include its ``match``; every distinct label set whose value meets the condition is one
alert instance. An instance is *pending* until the condition has held ``for`` seconds,
then *firing*; when the condition stops holding (or its series disappears) a firing
instance keeps firing for ``keep_firing_for`` seconds, then it is *resolved* and
forgotten. A pending instance whose condition stops is dropped (back to *inactive*).
The clock is passed in: nothing here reads the time, does I/O or starts a thread.

>>> from monitor.config import AlertRule
>>> rule = AlertRule(alert="Drift", metric="driftline_feature_drifted", threshold=1,
...                  annotations={"summary": "{{ feature }} drifted ({{ value }})"})
>>> engine = RuleEngine([rule])
>>> [t.new.value for t in engine.evaluate(
...     [("driftline_feature_drifted", {"model": "m", "feature": "x"}, 1.0)], now=0.0)]
['firing']
>>> engine.active()[0].annotations["summary"]
'x drifted (1)'
>>> [t.new.value for t in engine.evaluate([], now=60.0)]
['resolved']
"""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from alerts.formats import fingerprint, format_value, render_template, rfc3339
from monitor.config import AlertRule

__all__ = ["Alert", "AlertState", "RuleEngine", "Sample", "Transition"]

#: (metric name, labels, value), as exported on ``/metrics``
Sample = tuple[str, Mapping[str, str], float]

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}


class AlertState(StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class Alert:
    """One alert instance as notifications and ``/api/v1/alerts`` show it."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    state: AlertState
    value: float
    #: when the condition started holding (pending since)
    active_at: float
    #: when it started firing
    starts_at: float | None
    #: when it resolved
    ends_at: float | None
    fingerprint: str

    @property
    def name(self) -> str:
        return self.labels["alertname"]

    @property
    def model(self) -> str:
        return self.labels.get("model", "")

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "")

    def to_dict(self) -> dict[str, Any]:
        """JSON for ``/api/v1/alerts``, shaped like Prometheus' own."""
        return {
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "state": self.state.value,
            "activeAt": rfc3339(self.active_at),
            "startsAt": rfc3339(self.starts_at),
            "endsAt": rfc3339(self.ends_at),
            "value": format_value(self.value),
            "fingerprint": self.fingerprint,
        }


@dataclass(frozen=True)
class Transition:
    """An alert instance changed state at ``at``; ``alert.state`` is ``new``."""

    alert: Alert
    old: AlertState
    new: AlertState
    at: float

    @property
    def notifies(self) -> bool:
        """Whether sinks hear about it: a start of firing or a resolution."""
        return self.new in (AlertState.FIRING, AlertState.RESOLVED)


@dataclass
class _Instance:
    labels: dict[str, str]
    fingerprint: str
    state: AlertState
    value: float
    active_at: float
    fired_at: float | None = None
    keep_firing_since: float | None = None


class RuleEngine:
    """The alert instances of a set of rules, advanced by :meth:`evaluate`."""

    def __init__(self, rules: Sequence[AlertRule]) -> None:
        self._rules = {r.alert: r for r in rules}
        self._instances: dict[str, dict[str, _Instance]] = {r.alert: {} for r in rules}

    def evaluate(self, samples: Iterable[Sample], now: float) -> list[Transition]:
        """Advance every rule to ``now`` on the full current set of samples.

        A series that is absent from ``samples`` counts as not meeting its condition,
        so pass every sample of the metrics the rules use, not only the changed ones.
        """
        by_metric: dict[str, list[tuple[Mapping[str, str], float]]] = {}
        for name, labels, value in samples:
            by_metric.setdefault(name, []).append((labels, value))
        out: list[Transition] = []
        for rule in self._rules.values():
            out += self._advance(rule, by_metric.get(rule.metric, ()), now)
        return out

    def _advance(
        self,
        rule: AlertRule,
        series: Iterable[tuple[Mapping[str, str], float]],
        now: float,
    ) -> list[Transition]:
        compare = _OPS[rule.op]
        holding: dict[str, tuple[dict[str, str], float]] = {}
        for labels, value in series:
            # an empty matcher matches an absent label, as in PromQL ({segment=""})
            if any(labels.get(k, "") != v for k, v in rule.match.items()):
                continue
            if not compare(value, rule.threshold):
                continue
            merged = {**labels, **rule.labels, "alertname": rule.alert, "severity": rule.severity}
            alert_labels = dict(sorted(merged.items()))
            holding[fingerprint(alert_labels)] = (alert_labels, value)

        instances = self._instances[rule.alert]
        out: list[Transition] = []
        for fp, (labels, value) in holding.items():
            inst = instances.get(fp)
            if inst is None:
                inst = _Instance(labels, fp, AlertState.PENDING, value, active_at=now)
                instances[fp] = inst
                if rule.for_ <= 0:
                    inst.state, inst.fired_at = AlertState.FIRING, now
                out.append(self._transition(rule, inst, AlertState.INACTIVE, now))
                continue
            inst.value, inst.keep_firing_since = value, None
            if inst.state is AlertState.PENDING and now - inst.active_at >= rule.for_:
                inst.state, inst.fired_at = AlertState.FIRING, now
                out.append(self._transition(rule, inst, AlertState.PENDING, now))

        for fp, inst in list(instances.items()):
            if fp in holding:
                continue
            if inst.state is AlertState.FIRING and rule.keep_firing_for > 0:
                if inst.keep_firing_since is None:
                    inst.keep_firing_since = now
                if now - inst.keep_firing_since < rule.keep_firing_for:
                    continue
            del instances[fp]
            old = inst.state
            inst.state = AlertState.RESOLVED if old is AlertState.FIRING else AlertState.INACTIVE
            out.append(self._transition(rule, inst, old, now))
        return out

    def _transition(
        self, rule: AlertRule, inst: _Instance, old: AlertState, now: float
    ) -> Transition:
        return Transition(self._alert(rule, inst, now), old, inst.state, now)

    @staticmethod
    def _alert(rule: AlertRule, inst: _Instance, now: float | None = None) -> Alert:
        annotations = {
            k: render_template(v, inst.labels, inst.value) for k, v in rule.annotations.items()
        }
        resolved = inst.state in (AlertState.RESOLVED, AlertState.INACTIVE)
        return Alert(
            labels=dict(inst.labels),
            annotations=annotations,
            state=inst.state,
            value=inst.value,
            active_at=inst.active_at,
            starts_at=inst.fired_at,
            ends_at=now if resolved else None,
            fingerprint=inst.fingerprint,
        )

    def active(self) -> list[Alert]:
        """Pending and firing alerts, ordered by name then labels."""
        alerts = [
            self._alert(self._rules[name], inst)
            for name, instances in self._instances.items()
            for inst in instances.values()
        ]
        return sorted(alerts, key=lambda a: (a.name, sorted(a.labels.items())))

    def firing_counts(self) -> dict[tuple[str, str, str], int]:
        """Firing alerts per (model, alertname, severity), for ``driftline_alerts_firing``."""
        counts = Counter(
            (a.model, a.name, a.severity) for a in self.active() if a.state is AlertState.FIRING
        )
        return dict(counts)

    def snapshot(self) -> dict[str, Any]:
        """Plain data (JSON-ready) that :meth:`restore` reads back."""
        return {
            "version": 1,
            "alerts": [
                {
                    "alertname": name,
                    "labels": dict(inst.labels),
                    "state": inst.state.value,
                    "value": inst.value,
                    "active_at": inst.active_at,
                    "fired_at": inst.fired_at,
                    "keep_firing_since": inst.keep_firing_since,
                }
                for name, instances in self._instances.items()
                for inst in instances.values()
            ],
        }

    def restore(self, data: Mapping[str, Any]) -> None:
        """Replace the instances with a snapshot's; those of rules no longer configured
        are dropped (their resolution is not notified)."""
        if data.get("version") != 1:
            raise ValueError(f"unknown alert snapshot version {data.get('version')!r}")
        self._instances = {name: {} for name in self._rules}
        for a in data["alerts"]:
            instances = self._instances.get(a["alertname"])
            if instances is None:
                continue
            labels = {str(k): str(v) for k, v in sorted(a["labels"].items())}
            fp = fingerprint(labels)
            instances[fp] = _Instance(
                labels=labels,
                fingerprint=fp,
                state=AlertState(a["state"]),
                value=float(a["value"]),
                active_at=float(a["active_at"]),
                fired_at=None if a["fired_at"] is None else float(a["fired_at"]),
                keep_firing_since=(
                    None if a["keep_firing_since"] is None else float(a["keep_firing_since"])
                ),
            )
