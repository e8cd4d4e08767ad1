"""Alerting at the edge: rules over the exported metrics, notifications, retraining.

After a window evaluation the service hands every exported sample to the rule engine;
transitions to firing or resolved become notifications for each sink, and firing alerts
named in a model's ``retraining.on_alerts`` (or its cron schedule) become retraining
requests. Both go to a persisted outbox delivered by a dispatcher thread, never on the
consumer's path.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from alerts import (
    AlertState,
    Destination,
    Dispatcher,
    Notification,
    RetrainingPolicy,
    RuleEngine,
    Sample,
    Transition,
    new_notification_id,
    retraining_http_request,
    retraining_request,
    sink_request,
)
from monitor.config import DriftlineConfig

__all__ = ["Alerting"]

log = logging.getLogger("driftline.alerts")

#: Metrics the rules do not read (they are produced from the rules' own state).
REPUSH_SECONDS = 60.0
_OWN_METRICS = frozenset(
    {"driftline_alerts_firing", "driftline_webhook_deliveries", "driftline_retraining_requests"}
)


class Alerting:
    """Rule engine, sinks and retraining policies of one service."""

    def __init__(
        self,
        config: DriftlineConfig,
        state_dir: str | Path,
        now: float,
        environ: Mapping[str, str] = os.environ,
    ) -> None:
        self.state_file = Path(state_dir) / "alerts.json"
        self.engine = RuleEngine(config.alerts.rules)
        self.sinks = list(config.alerts.sinks)
        self.retraining = [(r, RetrainingPolicy(r, now=now)) for r in config.retraining]
        destinations = [Destination.from_sink(s, environ) for s in self.sinks]
        destinations += [Destination.for_retraining(r, environ) for r in config.retraining]
        self._tokens = {
            r.model: environ.get(r.target.token_env) if r.target.token_env else None
            for r in config.retraining
        }
        self.dispatcher = Dispatcher(Path(state_dir) / "outbox", destinations)
        self._last_push = -float("inf")
        self._restore()

    @staticmethod
    def wanted(config: DriftlineConfig) -> bool:
        return bool(config.alerts.rules or config.retraining)

    def _restore(self) -> None:
        """Alert and retraining state from the last run, so that an alert firing before a
        restart is not notified again (its pending notification is in the outbox)."""
        try:
            data = json.loads(self.state_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.error("alert state not restored", extra={"error": str(exc)})
            return
        try:
            self.engine.restore(data["rules"])
            policies = data.get("retraining", {})
            for settings, policy in self.retraining:
                if settings.model in policies:
                    policy.restore(policies[settings.model])
        except (KeyError, ValueError) as exc:
            log.error("alert state not restored", extra={"error": str(exc)})

    def _save(self) -> None:
        data = {
            "rules": self.engine.snapshot(),
            "retraining": {s.model: p.snapshot() for s, p in self.retraining},
        }
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_file.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_file)

    def evaluate(self, samples: Iterable[Sample], versions: Mapping[str, Any], now: float) -> None:
        mine = [s for s in samples if s[0] not in _OWN_METRICS]
        transitions = self.engine.evaluate(mine, now)
        # Notifications are durable in the outbox before the state that says they were sent.
        self._notify([t for t in transitions if t.notifies], now)
        triggered = False
        for settings, policy in self.retraining:
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
            http = retraining_http_request(
                settings.target, request, token=self._tokens.get(settings.model)
            )
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
        if transitions or triggered:
            self._save()

    def _notify(self, transitions: list[Transition], now: float) -> None:
        # Alertmanager resolves an alert it has not heard of for resolve_timeout (5m), so
        # firing alerts are pushed to it again every minute, as Prometheus does.
        if now - self._last_push >= REPUSH_SECONDS:
            self._last_push = now
            active = [a for a in self.engine.active() if a.state == AlertState.FIRING]
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
