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
from dataclasses import dataclass, field, replace
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
    #: wall-clock time of the last update taken (a version's merge is retired after
    #: ``versions.retire_after`` without one)
    updated_at: float = -math.inf

    @property
    def model_version(self) -> Any:
        return None if self.profile is None else self.profile.get("model_version")


@dataclass
class OwnedUnit:
    """One panes partition owned by this instance: its models and their alert state."""

    models: dict[str, _Merged] = field(default_factory=dict)
    #: per model, each live version's own merged window, by version
    versions: dict[str, dict[str, _Merged]] = field(default_factory=dict)
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
        # a new (stream-built) reference: windows of the old one restart
        m = self._started(spec, update)
        if m is not None:
            unit.models[update.model] = m
        return m

    def _started(self, spec: ModelSpec, update: PaneUpdate) -> _Merged | None:
        """A new merge for ``update``'s reference, or None (refused, counted) when there
        is no evaluator for it."""
        try:
            evaluator = spec.evaluator(update.fingerprint, update.profile)
        except Exception as exc:  # a profile that does not load
            self._reject("malformed", update, repr(exc))
            return None
        if evaluator is None:
            self._reject("other_reference", update, "no reference with this fingerprint")
            return None
        merge = PaneMerge(self.pane, self.size_panes, self.idle_timeout)
        return _Merged(merge, update.fingerprint, update.profile)

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
            if update.model_version is not None:
                self._apply_version(owned, update, now)
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
        for name, versions in owned.versions.items():
            for version, m in versions.items():
                if m.merge.advance(now) or m.evaluation is None:
                    self._evaluate(name, m, now, version)
        return out

    def _apply_version(self, owned: OwnedUnit, update: PaneUpdate, now: float) -> None:
        """Merge an update of a version's own window (the first reference seen of a
        version is kept; at most ``versions.live`` versions, a new one refused until one
        retires: no partition spoke of it for ``versions.retire_after``)."""
        spec = self.specs.get(update.model)
        if spec is None:
            self._reject("unknown_model", update, "no such model in the configuration")
            return
        assert update.model_version is not None
        versions = owned.versions.setdefault(update.model, {})
        m = versions.get(update.model_version)
        if m is None and len(versions) >= spec.live_versions:
            for version, held in list(versions.items()):
                if now - held.updated_at > spec.retire_after:
                    del versions[version]  # retired: its place is free
        if m is None and len(versions) >= spec.live_versions:
            # the live versions keep their places until they retire
            self._reject("version_limit", update, "versions.live versions are live already")
            return
        if m is None:
            if spec.stream_reference is None and update.fingerprint != spec.fingerprint:
                self._reject("other_reference", update, "binned against another reference")
                return
            m = self._started(spec, update)
            if m is None:
                return
            versions[update.model_version] = m
        elif m.fingerprint != update.fingerprint:
            self._reject("other_reference", update, "another reference of this version")
            return
        if not self._fits(update, m):
            return
        m.updated_at = now
        if m.merge.apply(update):
            self._evaluate(update.model, m, now, update.model_version)

    def tick(self, now: float) -> list[tuple[int, str]]:
        """Let idle partitions stop holding watermarks back; evaluate what moved; retire
        the versions no partition has spoken of for ``versions.retire_after``."""
        out = []
        for u, owned in self.units.items():
            for name, m in owned.models.items():
                if m.merge.advance(now):
                    self._evaluate(name, m, now)
                    out.append((u, name))
            for name, versions in owned.versions.items():
                spec = self.specs.get(name)
                for version, m in list(versions.items()):
                    if spec is None or now - m.updated_at > spec.retire_after:
                        del versions[version]
                    elif m.merge.advance(now):
                        self._evaluate(name, m, now, version)
        return out

    def _evaluate(self, name: str, m: _Merged, now: float, version: str | None = None) -> None:
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
        if version is not None:
            m.evaluation = replace(m.evaluation, model_version=version)
            return
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
            "versions": {
                name: {
                    version: {
                        "fingerprint": m.fingerprint,
                        "profile": m.profile,
                        "merge": m.merge.snapshot(),
                        "updated_at": m.updated_at,
                    }
                    for version, m in versions.items()
                }
                for name, versions in sorted(owned.versions.items())
            },
        }

    def restore(self, unit: int, state: Mapping[str, Any], now: float) -> OwnedUnit:
        """Replace a panes partition's merges with a snapshot's, whole or not at all."""
        self.units.pop(unit, None)
        models: dict[str, _Merged] = {}
        versions: dict[str, dict[str, _Merged]] = {}
        try:
            for name, data in state["models"].items():
                merged = self._restored(name, data)
                if merged is not None:
                    models[name] = merged
            for name, by_version in state.get("versions", {}).items():
                for version, data in by_version.items():
                    merged = self._restored(name, data)
                    if merged is not None:
                        merged.updated_at = float(data.get("updated_at", now))
                        versions.setdefault(name, {})[str(version)] = merged
        except RestoreError:
            raise
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise RestoreError(f"malformed model state: {exc!r}") from exc
        owned = self.units[unit] = OwnedUnit(models, versions)
        for name, m in models.items():
            self._evaluate(name, m, now)
        for name, by_version in versions.items():
            for version, m in by_version.items():
                self._evaluate(name, m, now, version)
        return owned

    def _restored(self, name: str, data: Mapping[str, Any]) -> _Merged | None:
        spec = self.specs.get(name)
        if spec is None:
            return None
        fingerprint, profile = str(data["fingerprint"]), data.get("profile")
        evaluator = spec.evaluator(fingerprint, profile)
        if evaluator is None:
            raise RestoreError(f"model {name}: merged against another reference")
        merge = PaneMerge(self.pane, self.size_panes, self.idle_timeout)
        merge.restore(data["merge"], evaluator.pane_size, evaluator.extra_size)
        return _Merged(merge, fingerprint, profile)

    def drop(self, unit: int) -> None:
        self.units.pop(unit, None)

    # -- reading -----------------------------------------------------------------------------

    def evaluations(self, unit: int | None = None) -> dict[str, ModelEvaluation]:
        """The latest evaluation of each model owned here (of panes partition ``unit``
        only, when given), with its live versions'."""
        out = {}
        for u, owned in self.units.items():
            if unit is not None and u != unit:
                continue
            for name, m in owned.models.items():
                if m.evaluation is None:
                    continue
                versions = {
                    v: vm.evaluation
                    for v, vm in sorted(owned.versions.get(name, {}).items())
                    if vm.evaluation is not None
                }
                if not versions:
                    out[name] = m.evaluation
                    continue
                # most events; on a tie (a shadow answers as many), the first by name
                serving = min(versions, key=lambda v: (-versions[v].window_events, v))
                out[name] = replace(m.evaluation, versions=versions, serving_version=serving)
        return out

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
