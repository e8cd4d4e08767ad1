"""Stage 2: the models this instance owns — merged panes, evaluations, alert state.

The panes topic is keyed by model, so every model lives on one panes partition, and the
panes consumer group gives each panes partition to exactly one instance. That instance
merges the model's panes from every input partition (:class:`~monitor.pane_merge.PaneMerge`),
evaluates the merged window, exports the model's series and runs its alert rules; no
other instance does. The unit of ownership, checkpoint and hand-over is a panes
partition: its merges and its alert state are one ``snapshot()`` / ``restore()``.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from consumers.checkpoints import RestoreError
from consumers.model_specs import ModelSpec
from monitor.evaluation import ModelEvaluation
from monitor.evaluation_history import EvaluationHistory, evaluation_point
from monitor.pane_merge import PaneMerge, PaneUpdate
from monitor.panes import PaneCounts

__all__ = ["ModelOwner", "OwnedUnit"]

log = logging.getLogger("driftline.models")


@dataclass
class _Merged:
    merge: PaneMerge
    fingerprint: str
    profile: Mapping[str, Any] | None = None  # a stream-built reference, as plain data
    evaluation: ModelEvaluation | None = None
    #: recent evaluations for the web view's charts; not checkpointed: after a restore or
    #: a hand-over it starts again from the restored window's evaluation
    history: EvaluationHistory = field(default_factory=EvaluationHistory)

    @property
    def model_version(self) -> Any:
        return None if self.profile is None else self.profile.get("model_version")


@dataclass
class OwnedUnit:
    """One panes partition owned by this instance: its models and their alert state."""

    models: dict[str, _Merged] = field(default_factory=dict)
    #: rule and retraining state of these models (see :mod:`consumers.alerting`)
    alerts: Any = None


class ModelOwner:
    """Merges, evaluations and alert state of the models of the panes partitions held."""

    def __init__(
        self,
        specs: Mapping[str, ModelSpec],
        pane: float,
        size_panes: int,
        idle_timeout: float,
        max_future: float = 3600.0,
    ) -> None:
        self.specs = specs
        self.pane, self.size_panes, self.idle_timeout = pane, size_panes, idle_timeout
        self.max_future = max_future
        self.units: dict[int, OwnedUnit] = {}
        #: updates refused, by reason (unknown model, another reference, implausible...)
        self.rejected: Counter[str] = Counter()
        #: model versions whose stream-built reference was replaced by a newer version's
        self._retired: dict[str, set[Any]] = {}
        #: told of every evaluation as it is made (``driftline replay`` logs each window)
        self.on_evaluation: Callable[[ModelEvaluation], None] | None = None

    def _reject(self, reason: str, update: PaneUpdate, why: str) -> None:
        self.rejected[reason] += 1
        if self.rejected[reason] in (1, 10, 100, 1000) or self.rejected[reason] % 10_000 == 0:
            log.warning(
                "pane update refused",
                extra={
                    "model": update.model,
                    "partition": update.partition,
                    "reason": reason,
                    "detail": why,
                    "refused": self.rejected[reason],
                },
            )

    def _plausible(self, u: PaneUpdate, now: float) -> str | None:
        """Why ``u`` cannot come from a stage 1 of this configuration, or None."""
        if u.last_closed is None:
            if u.watermark != float("-inf") or u.panes:
                return "panes or a watermark without a closed pane"
        elif u.last_closed != math.floor(u.watermark / self.pane) - 1:
            return "last closed pane does not match the watermark"
        if u.watermark > now + self.max_future + self.pane:
            return "watermark beyond the accepted future"
        if u.active_at > now + 60.0:
            return "activity in the future"
        if u.epoch > (now + 86400.0) * 1000.0:
            return "epoch in the future"
        if any(u.last_closed is None or i > u.last_closed for i, _ in u.panes):
            return "a pane that is not closed"
        return None

    def unit(self, unit: int) -> OwnedUnit:
        u = self.units.get(unit)
        if u is None:
            u = self.units[unit] = OwnedUnit()
        return u

    def _merged(self, unit: OwnedUnit, update: PaneUpdate) -> _Merged | None:
        spec = self.specs.get(update.model)
        if spec is None:
            self._reject("unknown_model", update, "no such model in the configuration")
            return None
        m = unit.models.get(update.model)
        if m is not None and m.fingerprint == update.fingerprint:
            return m
        if spec.stream_reference is None:
            if update.fingerprint != spec.fingerprint:
                self._reject("other_reference", update, "binned against another reference")
                return None
        else:
            version = None if update.profile is None else update.profile.get("model_version")
            retired = self._retired.setdefault(update.model, set())
            if m is not None and (version == m.model_version or version in retired):
                # several instances built their own reference of one version from different
                # events: the first one seen is kept
                self._reject(
                    "other_reference", update, "another stream-built reference of this version"
                )
                return None
            if m is not None:
                retired.add(m.model_version)
        try:
            evaluator = spec.evaluator(update.fingerprint, update.profile)
        except Exception as exc:  # a profile that does not load
            self._reject("malformed", update, repr(exc))
            return None
        if evaluator is None:
            self._reject("other_reference", update, "no reference with this fingerprint")
            return None
        # a new (stream-built) reference: windows of the old one restart
        m = unit.models[update.model] = _Merged(
            PaneMerge(self.pane, self.size_panes, self.idle_timeout),
            update.fingerprint,
            update.profile,
        )
        return m

    def _fits(self, update: PaneUpdate, m: _Merged) -> bool:
        evaluator = self.specs[update.model].evaluator(m.fingerprint, m.profile)
        if evaluator is None:
            return False
        size, extra = evaluator.pane_size, evaluator.extra_size
        for _, p in update.panes:
            if p.counts.shape != (size,) or p.sums.shape != (size,) or p.extra.shape != (extra,):
                self._reject("malformed", update, "pane vectors do not fit the layout")
                return False
        return True

    def apply(self, unit: int, updates: Iterable[PaneUpdate], now: float) -> list[str]:
        """Take a panes partition's updates; return the models evaluated again."""
        owned = self.unit(unit)
        changed: dict[str, bool] = {}
        for update in updates:
            why = self._plausible(update, now)
            if why is not None:
                self._reject("implausible", update, why)
                continue
            m = self._merged(owned, update)
            if m is not None and self._fits(update, m):
                changed[update.model] = m.merge.apply(update) or changed.get(update.model, False)
        out = []
        for name, panes_changed in sorted(changed.items()):
            m = owned.models[name]
            if m.merge.advance(now) or panes_changed or m.evaluation is None:
                self._evaluate(name, m, now)
                out.append(name)
        return out

    def tick(self, now: float) -> list[tuple[int, str]]:
        """Let idle partitions stop holding watermarks back; evaluate what moved."""
        out = []
        for u, owned in self.units.items():
            for name, m in owned.models.items():
                if m.merge.advance(now):
                    self._evaluate(name, m, now)
                    out.append((u, name))
        return out

    def _evaluate(self, name: str, m: _Merged, now: float) -> None:
        if m.merge.last_closed is None:
            return
        evaluator = self.specs[name].evaluator(m.fingerprint, m.profile)
        if evaluator is None:
            return
        size, extra = evaluator.pane_size, evaluator.extra_size
        window = m.merge.window(lambda: PaneCounts.zeros(size, extra))
        m.evaluation = evaluator.evaluate_window(
            window, now, m.merge.watermark, m.merge.window_range()
        )
        m.history.add(evaluation_point(m.evaluation))
        if self.on_evaluation is not None:
            self.on_evaluation(m.evaluation)

    # -- ownership and checkpoints -----------------------------------------------------------

    def snapshot(self, unit: int) -> dict[str, Any]:
        owned = self.units.get(unit, OwnedUnit())
        return {
            "models": {
                name: {
                    "fingerprint": m.fingerprint,
                    "profile": m.profile,
                    "merge": m.merge.snapshot(),
                }
                for name, m in sorted(owned.models.items())
            },
        }

    def restore(self, unit: int, state: Mapping[str, Any], now: float) -> OwnedUnit:
        """Replace a panes partition's merges with a snapshot's, whole or not at all."""
        self.units.pop(unit, None)
        models: dict[str, _Merged] = {}
        try:
            for name, data in state["models"].items():
                spec = self.specs.get(name)
                if spec is None:
                    continue
                fingerprint, profile = str(data["fingerprint"]), data.get("profile")
                evaluator = spec.evaluator(fingerprint, profile)
                if evaluator is None:
                    raise RestoreError(f"model {name}: merged against another reference")
                merge = PaneMerge(self.pane, self.size_panes, self.idle_timeout)
                merge.restore(data["merge"], evaluator.pane_size, evaluator.extra_size)
                models[name] = _Merged(merge, fingerprint, profile)
        except RestoreError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise RestoreError(f"malformed model state: {exc!r}") from exc
        owned = self.units[unit] = OwnedUnit(models)
        for name, m in models.items():
            self._evaluate(name, m, now)
        return owned

    def drop(self, unit: int) -> None:
        self.units.pop(unit, None)

    # -- reading -----------------------------------------------------------------------------

    def evaluations(self) -> dict[str, ModelEvaluation]:
        return {
            name: m.evaluation
            for owned in self.units.values()
            for name, m in owned.models.items()
            if m.evaluation is not None
        }

    def history(self, model: str) -> list[Mapping[str, Any]]:
        """Recent evaluation points of ``model``, oldest first (empty when not owned here)."""
        for owned in self.units.values():
            m = owned.models.get(model)
            if m is not None:
                return m.history.points()
        return []

    def unit_of(self, model: str) -> int | None:
        for u, owned in self.units.items():
            if model in owned.models:
                return u
        return None
