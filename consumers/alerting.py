"""Alerting at the edge: rules over the exported metrics, notifications, retraining.

After the owner of a model evaluates its merged window, the model's samples go to the
rules of the panes partition it belongs to (never read back from the scrape path);
transitions to firing or resolved become notifications for each sink, and firing alerts
named in a model's ``retraining.on_alerts`` (or its cron schedule) become retraining
requests. Both go to a persisted outbox delivered by dispatcher threads, never on the
consumer's path.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from typing import Any

from alerts import (
    AlertState,
    Destination,
    Dispatcher,
    Notification,
    Outbox,
    RetrainingPolicy,
    RuleEngine,
    Sample,
    Transition,
    new_notification_id,
    retraining_http_request,
    retraining_request,
    sink_request,
)
from alerts.outbox import BlobStore
from monitor.config import DriftlineConfig

__all__ = ["AlertUnit", "Alerting"]

log = logging.getLogger("driftline.alerts")

#: Metrics the rules do not read (they are produced from the rules' own state).
REPUSH_SECONDS = 60.0
_OWN_METRICS = frozenset(
    {"driftline_alerts_firing", "driftline_webhook_deliveries", "driftline_retraining_requests"}
)


class AlertUnit:
    """Rule instances and retraining state of the models of one owned panes partition.

    It moves with the models: saved in that partition's stage-2 checkpoint and restored by
    whichever instance takes the partition over, so an alert firing before a hand-over is
    not notified again."""

    def __init__(self, config: DriftlineConfig, now: float) -> None:
        self.engine = RuleEngine(config.alerts.rules)
        self.retraining = [(r, RetrainingPolicy(r, now=now)) for r in config.retraining]
        self.last_push = -float("inf")

    def snapshot(self) -> dict[str, Any]:
        return {
            "rules": self.engine.snapshot(),
            "retraining": {s.model: p.snapshot() for s, p in self.retraining},
        }

    def restore(self, data: Mapping[str, Any]) -> None:
        self.engine.restore(data["rules"])
        policies = data.get("retraining", {})
        for settings, policy in self.retraining:
            if settings.model in policies:
                policy.restore(policies[settings.model])


class Alerting:
    """Sinks, retraining targets and the outbox of one service; rule state is per
    :class:`AlertUnit`."""

    def __init__(
        self,
        config: DriftlineConfig,
        store: BlobStore,
        now: float,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self.config = config
        self.sinks = list(config.alerts.sinks)
        destinations = [Destination.from_sink(s, environ) for s in self.sinks]
        destinations += [Destination.for_retraining(r, environ) for r in config.retraining]
        # the outbox lives in the configured state store, next to the alert state
        self.dispatcher = Dispatcher(Outbox(store), destinations)

    @staticmethod
    def wanted(config: DriftlineConfig) -> bool:
        return bool(config.alerts.rules or config.retraining)

    def new_unit(self, now: float, state: Mapping[str, Any] | None = None) -> AlertUnit:
        unit = AlertUnit(self.config, now)
        if state is not None:
            try:
                unit.restore(state)
            except (KeyError, ValueError, TypeError) as exc:
                log.error("alert state not restored", extra={"error": str(exc)})
                unit = AlertUnit(self.config, now)
        return unit

    def evaluate(
        self,
        unit: AlertUnit,
        samples: Iterable[Sample],
        versions: Mapping[str, Any],
        now: float,
        models: Iterable[str],
    ) -> bool:
        """Advance ``unit``'s rules on the samples of its ``models``; True when its state
        changed (the caller makes it durable before going on)."""
        owned = set(models)
        mine = [s for s in samples if s[0] not in _OWN_METRICS]
        transitions = unit.engine.evaluate(mine, now)
        # Notifications are durable in the outbox before the state that says they were sent.
        self._notify(unit, [t for t in transitions if t.notifies], now)
        triggered = False
        for settings, policy in unit.retraining:
            if settings.model not in owned:
                continue
            trigger = policy.on_transitions(transitions, now) or policy.on_schedule(now)
            if trigger is None:
                continue
            request = retraining_request(
                model=trigger.model,
                model_version=versions.get(trigger.model),
                reason=trigger.reason,
                alerts=list(trigger.alerts),
                requested_at=now,
            )
            http = retraining_http_request(settings.target, request)
            self.dispatcher.submit(
                Notification(
                    id=str(request["id"]),
                    sink=f"retraining.{settings.model}.{settings.target.type}",
                    request=http,
                    created_at=now,
                    model=settings.model,
                    target=settings.target.type,
                )
            )
            log.info(
                "retraining requested", extra={"model": settings.model, "reason": trigger.reason}
            )
            triggered = True
        return bool(transitions) or triggered

    def _notify(self, unit: AlertUnit, transitions: list[Transition], now: float) -> None:
        # Alertmanager resolves an alert it has not heard of for resolve_timeout (5m), so
        # firing alerts are pushed to it again every minute, as Prometheus does.
        if now - unit.last_push >= REPUSH_SECONDS:
            unit.last_push = now
            active = [a for a in unit.engine.active() if a.state == AlertState.FIRING]
            for sink in self.sinks:
                if sink.type == "alertmanager" and active:
                    request = sink_request(sink, active, valid_until=now + 4 * REPUSH_SECONDS)
                    if request is not None:
                        self.dispatcher.submit(
                            Notification(
                                id=new_notification_id(),
                                sink=sink.name,
                                request=request,
                                created_at=now,
                            )
                        )
        if not transitions:
            return
        alerts = [t.alert for t in transitions]
        for sink in self.sinks:
            request = sink_request(sink, alerts)
            if request is None:
                continue
            self.dispatcher.submit(
                Notification(
                    id=new_notification_id(), sink=sink.name, request=request, created_at=now
                )
            )

    def close(self, timeout: float = 5.0) -> None:
        self.dispatcher.close(timeout)
