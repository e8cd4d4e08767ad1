"""``driftline replay``: the service's own core run offline over files of events.

The records of the files go through what the Kafka records go through: the same decoders
(each JSONL line is one record value; a Parquet row is encoded to the same JSON), one
stage-1 input partition (panes, label join), stage 2 (merge, evaluate), then the
configured alert rules. Nothing is computed here. Stage 1's updates reach stage 2 on the
service's schedule, with a call standing in for the panes topic: closed panes at once,
panes changed by late labels (and idle watermarks) with each heartbeat.

Time is event time. Each record arrives at the time :func:`~monitor.arrival_clock.
arrival_times` gives it (its own time for a file in time order), the two files are merged
by arrival, and the replay clock is the latest arrival so far: it stands for the wall clock
wherever the service reads one (validation's ``max_future``/``max_age``, the watermark
cap of ``clock_skew``, idle panes moving on, label TTLs, rules' ``for:``). The clock moves
in steps of the service's stage-2 tick (a second): the records of each step are decoded
as one batch, predictions before labels, then the heartbeat when one is due, then the
stage-2 tick, as the service's loops do. A pause in the traffic is crossed one pane at a
time, so the panes the service would have closed while idle are closed and evaluated one
by one. At the end, event time moves on until the pane of the last record has closed, as
the service's would once traffic stops.

Alert rules are evaluated on the replay clock after every step; nothing is sent (no
notification, no retraining request): the transitions are written with their window.
"""

from __future__ import annotations

import heapq
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import msgspec

from alerts.formats import rfc3339
from alerts.rules import RuleEngine
from consumers.exceptions import ConsumersError
from consumers.exporter import evaluation_samples
from consumers.http_app import finite
from consumers.loop import heartbeat_interval
from consumers.panes_loop import TICK_SECONDS
from consumers.replay_report import ReplayReport, alert_line
from consumers.service import LOCAL_UNIT, Service
from monitor.arrival_clock import arrival_times
from monitor.config import DriftlineConfig
from monitor.evaluation import ModelEvaluation
from monitor.explain import TOP_BINS
from monitor.pane_merge import PaneUpdate
from monitor.window_log import AlertChange, LoggedWindow, WindowLog

__all__ = [
    "Replay",
    "ReplaySummary",
    "merged",
    "read_records",
    "record_time",
    "replay_files",
    "window_line",
]

#: the input partition the replay counts everything in
PARTITION = 0
PREDICTION, LABEL = 0, 1


class _Stamp(msgspec.Struct):
    timestamp: datetime | float | None = None


_stamp = msgspec.json.Decoder(_Stamp)


def record_time(value: bytes) -> float | None:
    """The ``timestamp`` of a record, or None when it has none or cannot be read (the
    decoder then decides what the record is)."""
    try:
        t = _stamp.decode(value).timestamp
    except (msgspec.DecodeError, ValueError):
        return None
    if isinstance(t, datetime):
        t = (t if t.tzinfo is not None else t.replace(tzinfo=UTC)).timestamp()
    return t if t is not None and math.isfinite(t) else None


def read_records(path: str | Path) -> Iterator[bytes]:
    """Record values of a file: each line of a JSONL file (a blank line is an empty
    record, as on Kafka), each row of a Parquet file encoded as a JSON object."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".parquet":
            yield from _parquet_records(path)
            return
        with path.open("rb") as f:
            for line in f:
                yield line.rstrip(b"\r\n")
    except OSError as exc:
        raise ConsumersError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _parquet_records(path: Path) -> Iterator[bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    encoder = msgspec.json.Encoder(enc_hook=str)
    try:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000):
            for row in batch.to_pylist():
                yield encoder.encode({k: v for k, v in row.items() if v is not None})
    except (pa.ArrowException, ValueError) as exc:
        raise ConsumersError(f"cannot read {path} as Parquet: {exc}") from exc


def merged(
    predictions: Iterable[bytes], labels: Iterable[bytes]
) -> Iterator[tuple[float | None, int, bytes]]:
    """``(arrival, kind, value)`` of both files merged by arrival time, each file in its
    own order (as a consumer of two topics sees them)."""

    def timed(values: Iterable[bytes], kind: int) -> Iterator[tuple[float | None, int, bytes]]:
        for arrival, value in arrival_times((record_time(v), v) for v in values):
            yield arrival, kind, value

    return heapq.merge(
        timed(predictions, PREDICTION),
        timed(labels, LABEL),
        key=lambda r: -math.inf if r[0] is None else r[0],
    )


@dataclass
class ReplaySummary:
    """What a replay did, for the lines it prints at the end."""

    predictions: int = 0
    labels: int = 0
    start: float | None = None
    end: float | None = None
    evaluations: Counter[str] = field(default_factory=Counter)
    flagged: Counter[str] = field(default_factory=Counter)
    #: per (model, feature): windows with a verdict, and those drifted
    judged: Counter[tuple[str, str]] = field(default_factory=Counter)
    drifted: Counter[tuple[str, str]] = field(default_factory=Counter)
    alerts: Counter[str] = field(default_factory=Counter)  # firing / resolved
    invalid: Mapping[tuple[str, str], int] = field(default_factory=dict)
    late: Mapping[str, int] = field(default_factory=dict)

    def count(self, ev: ModelEvaluation) -> None:
        self.evaluations[ev.model] += 1
        if ev.drifted_features:
            self.flagged[ev.model] += 1
        for f in ev.features:
            if f.drifted is not None:
                self.judged[(ev.model, f.name)] += 1
                self.drifted[(ev.model, f.name)] += int(f.drifted)

    def lines(self) -> list[str]:
        span = ""
        if self.start is not None and self.end is not None:
            span = f", event time {rfc3339(self.start)} to {rfc3339(self.end)}"
        out = [
            f"replayed {self.predictions} prediction and {self.labels} label records{span}: "
            f"{sum(self.evaluations.values())} window evaluations"
        ]
        for model, n in sorted(self.evaluations.items()):
            out.append(f"  {model}: {n} windows, {self.flagged[model]} with a drifted feature")
            for (m, feature), judged in sorted(self.judged.items()):
                if m == model:
                    out.append(
                        f"    {feature}: drifted in {self.drifted[(m, feature)]} of {judged}"
                    )
            if self.late.get(model):
                out.append(f"    late events (after their pane closed): {self.late[model]}")
        if self.invalid:
            shown = ", ".join(
                f"{model} {reason} {n}" for (model, reason), n in sorted(self.invalid.items())
            )
            out.append(f"  invalid records (would be dead-lettered): {shown}")
        out.append(
            f"  alerts: {self.alerts['firing']} fired, {self.alerts['resolved']} resolved "
            "(rules on the replay clock; no notification sent, no retraining requested)"
        )
        return out


class Replay:
    """One service core fed from files in event time; logged windows go to ``emit``."""

    def __init__(
        self,
        config: DriftlineConfig,
        emit: Callable[[LoggedWindow], None],
        *,
        base_dir: Path | None = None,
    ) -> None:
        # stage 1's updates are handed to stage 2 here, on the service's schedule
        self.service = Service(config, base_dir=base_dir, local=False)
        self.service.owner.on_evaluation = self._evaluated
        self.heartbeat = heartbeat_interval(
            config.state.checkpoint_interval, config.windows.idle_timeout
        )
        self._last_heartbeat = -math.inf
        self.rules = RuleEngine(config.alerts.rules) if config.alerts.rules else None
        self.pane = config.windows.pane
        self.lateness = config.windows.allowed_lateness
        self.max_batch = config.kafka.max_batch
        self.emit = emit
        self.log = WindowLog()
        self.summary = ReplaySummary()
        #: the replay clock: the latest arrival so far
        self.clock = -math.inf
        #: the samples the rules read, kept while the evaluations are the same objects
        self._samples: tuple[list[ModelEvaluation], list[Any]] = ([], [])

    # -- the clock -------------------------------------------------------------------------

    def run(self, records: Iterable[tuple[float | None, int, bytes]]) -> ReplaySummary:
        """Replay ``(arrival, kind, value)`` records in their order; return the summary."""
        values: tuple[list[bytes], list[bytes]] = ([], [])
        times: tuple[list[float], list[float]] = ([], [])
        #: records with no time before the first one with a time: they arrive with it
        timeless: list[tuple[int, bytes]] = []
        step_end = -math.inf
        for arrival, kind, value in records:
            if arrival is None and not math.isfinite(self.clock):
                timeless.append((kind, value))
                continue
            t = self.clock if arrival is None else max(self.clock, arrival)
            if t >= step_end or len(values[PREDICTION]) + len(values[LABEL]) >= self.max_batch:
                if values[PREDICTION] or values[LABEL]:
                    self._step(values, times)
                    values, times = ([], []), ([], [])
                self._pause(t)
                step_end = t + TICK_SECONDS
            if self.summary.start is None:
                self.summary.start = t
            self.clock = t
            for k, v in [*timeless, (kind, value)]:
                values[k].append(v)
                times[k].append(t)
            timeless.clear()
        if timeless:  # no time anywhere: the epoch, where validation refuses what it must
            self.clock = 0.0
            for k, v in timeless:
                values[k].append(v)
                times[k].append(0.0)
        if values[PREDICTION] or values[LABEL]:
            self._step(values, times)
        self._finish()
        return self.summary

    def _step(
        self, values: tuple[list[bytes], list[bytes]], times: tuple[list[float], list[float]]
    ) -> None:
        """The records of one step, decoded and counted at the replay clock, then a tick."""
        now, s = self.clock, self.service
        if values[PREDICTION]:
            self.summary.predictions += len(values[PREDICTION])
            decoded = s.decoder.decode(values[PREDICTION], times[PREDICTION], now=now)
            self._apply(s.handle(decoded, now, PARTITION), now)  # closed panes: at once
        if values[LABEL]:
            self.summary.labels += len(values[LABEL])
            labels = s.ground_truth_decoder.decode(values[LABEL], times[LABEL], now=now)
            s.handle_ground_truth(labels, now, PARTITION)  # goes out with the heartbeat
        self._tick(now)

    def _apply(self, updates: list[PaneUpdate], now: float) -> None:
        if updates:
            self.service.apply_panes(LOCAL_UNIT, updates, now)
            self._alerts(now)

    def _tick(self, now: float, *, heartbeat: bool = False) -> None:
        """A heartbeat of stage 1 when one is due (or ``heartbeat``), then stage 2's tick."""
        if heartbeat or now - self._last_heartbeat >= self.heartbeat:
            self._last_heartbeat = now
            self._apply(self.service.flush(PARTITION, now), now)
        self.service.tick(now)
        self._alerts(now)

    def _pause(self, until: float) -> None:
        """Cross a pause in the traffic one pane at a time, as the service's clock would."""
        if not math.isfinite(self.clock):
            return
        now = self.clock + self.pane
        while now < until:
            self._tick(now)
            now += self.pane

    def _finish(self) -> None:
        """Let event time move on until the pane of the last record has closed; log every
        window still live."""
        if math.isfinite(self.clock):
            self.summary.end = self.clock
            last_pane_end = (math.floor(self.clock / self.pane) + 1) * self.pane
            step = max(TICK_SECONDS, self.pane / 60.0)
            now = self.clock
            limit = now + self.lateness + 2 * self.pane + self.heartbeat + step
            while not self._closed(last_pane_end) and now < limit:
                now += step
                self._tick(now)
            self._tick(now, heartbeat=True)  # what the service publishes when it stops
        for logged in self.log.close():
            self._done(logged)
        counters = self.service.inputs.counters()
        self.summary.late = {m: c.late for m, c in counters.items()}
        self.summary.invalid = dict(self.service.inputs.invalid())

    def _closed(self, pane_end: float) -> bool:
        evaluations = self.service.owner.evaluations().values()
        return all(ev.window_end is not None and ev.window_end >= pane_end for ev in evaluations)

    # -- what comes out --------------------------------------------------------------------

    def _evaluated(self, ev: ModelEvaluation) -> None:
        done = self.log.evaluated(ev)
        if done is not None:
            self._done(done)

    def _done(self, logged: LoggedWindow) -> None:
        self.summary.count(logged.evaluation)
        self.emit(logged)

    def _alerts(self, now: float) -> None:
        """The configured rules on the current evaluations, as the service runs them after
        each evaluation and tick; transitions are logged with their window, not sent."""
        if self.rules is None:
            return
        evaluations = self.service.owner.evaluations()
        current = list(evaluations.values())
        held = self._samples[0]
        if len(current) != len(held) or any(a is not b for a, b in zip(current, held, strict=True)):
            self._samples = (current, evaluation_samples(evaluations))
        changes = []
        for t in self.rules.evaluate(self._samples[1], now):
            if t.notifies:
                self.summary.alerts[t.new.value] += 1
                a = t.alert
                changes.append(AlertChange(a.model, a.name, t.new.value, t.at, a.value, a.labels))
        self.log.alerted(changes)


def _number(value: float | None) -> float | None:
    """JSON has no NaN or infinity: an undefined value is null."""
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def window_line(logged: LoggedWindow) -> dict[str, Any]:
    """One logged window as a line of replay output (each feature's ``threshold`` is the
    one its evaluation decided with; ``verdict`` names the rule that decided, ``why`` holds
    the reference and window summaries and the bins that moved the score most)."""
    ev = logged.evaluation
    features = {}
    for f in ev.features:
        decision = f.decision
        features[f.name] = {
            "method": f.method,
            "score": _number(decision.score) if decision is not None else None,
            "threshold": _number(f.threshold),
            "n": f.events,
            "drifted": f.drifted,
            "threshold_kind": f.threshold_kind,
            "min_effect": f.min_effect,
            "verdict": finite(f.verdict()),
            "why": finite(f.why(top=TOP_BINS)),
        }
    return {
        "model": ev.model,
        "window_start": rfc3339(ev.window_start) if ev.window_start is not None else None,
        "window_end": rfc3339(ev.window_end) if ev.window_end is not None else None,
        "events": ev.window_events,
        "features": features,
        "drifted_features_ratio": _number(ev.drifted_features_ratio),
        "performance": {k: _number(v) for k, v in sorted(ev.performance.items())},
        "performance_estimated": {k: _number(v) for k, v in sorted(ev.estimated.items())},
        "alerts": [alert_line(a) for a in logged.alerts],
    }


def replay_files(
    config: DriftlineConfig,
    predictions: str | Path,
    labels: str | Path | None,
    out: TextIO,
    base_dir: Path | None = None,
    report: str | Path | None = None,
) -> ReplaySummary:
    """Replay a predictions file (and a labels file) with ``config``; one JSON line per
    window to ``out``, and with ``report`` the whole period as one HTML file there."""
    collected = ReplayReport()

    def emit(logged: LoggedWindow) -> None:
        out.write(json.dumps(window_line(logged), allow_nan=False) + "\n")
        if report is not None:
            collected.add(logged)

    replay = Replay(config, emit, base_dir=base_dir)
    label_records = read_records(labels) if labels is not None else iter(())
    summary = replay.run(merged(read_records(predictions), label_records))
    if report is not None:
        tasks = {name: spec.settings.task for name, spec in replay.service.specs.items()}
        html = collected.html(tasks, summary.start, summary.end)
        try:
            Path(report).write_text(html, encoding="utf-8")
        except OSError as exc:
            raise ConsumersError(f"cannot write {report}: {exc.strerror or exc}") from exc
    return summary
