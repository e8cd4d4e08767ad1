"""Per-model state: reference, pane window, cumulative counters; ingest batches, evaluate.

:class:`ModelMonitor` is the pure heart of the service. It is handed decoded batches and the
wall-clock time, and hands back immutable :class:`~monitor.evaluation.ModelEvaluation`
snapshots. It never reads a clock or touches I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from monitor.drift import TESTS, DriftScore, compare, is_drifted
from monitor.evaluation import DriftPolicy, FeatureEvaluation, MethodChoice, ModelEvaluation
from monitor.events import EventBatch
from monitor.kpis import KpiSet
from monitor.label_join import Joined
from monitor.panes import CountLayout, FeatureSlots, PaneCounts
from monitor.performance import ExpectedPerformance, PerformanceAccumulator
from monitor.reference import FeatureProfile, ReferenceProfile
from monitor.schema import FeatureKind
from monitor.window import PaneWindow

__all__ = [
    "DELAY_BUCKETS",
    "LATENCY_BUCKETS",
    "ModelMonitor",
    "WindowSpec",
    "feature_scores",
    "threshold_for",
]

#: Upper bounds (seconds) of the prediction-latency histogram buckets.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Upper bounds (seconds) of the label-delay histogram: a second to a week.
DELAY_BUCKETS: tuple[float, ...] = (1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 10800.0)
DELAY_BUCKETS += (21600.0, 43200.0, 86400.0, 172800.0, 604800.0)
_FINE_METHODS = frozenset({"wasserstein", "ks"})


#: recent event times a monitor keeps to find where event time really is
RECENT_TIMES = 256


class WindowSpec:
    """Pane length, window length in panes and allowed lateness, in seconds; how far
    ahead of the wall clock an event time may drive the watermark (``clock_skew``)."""

    def __init__(
        self, pane: float, size: float, allowed_lateness: float, clock_skew: float = 60.0
    ) -> None:
        panes = size / pane
        if pane <= 0 or panes < 1 or abs(panes - round(panes)) > 1e-9:
            raise ValueError("window size must be a positive whole multiple of the pane")
        self.pane = pane
        self.size_panes = round(panes)
        self.allowed_lateness = allowed_lateness
        self.clock_skew = clock_skew


class ModelMonitor:
    """Reference, live window and counters of one model."""

    def __init__(
        self,
        profile: ReferenceProfile,
        windows: WindowSpec,
        policy: DriftPolicy | None = None,
        *,
        range_margin: float = 0.0,
        performance: PerformanceAccumulator | None = None,
        expected: ExpectedPerformance | None = None,
        kpis: KpiSet | None = None,
    ) -> None:
        self.profile = profile
        self.policy = policy or DriftPolicy()
        self.layout = CountLayout(profile, range_margin, kpis.key if kpis is not None else "")
        #: each feature's false-alarm rate per evaluation, for this window and pane
        self.feature_alpha = self.policy.feature_alpha(
            len(self.layout.features), windows.pane, windows.size_panes
        )
        self.performance = performance
        self.expected = expected
        self.kpis = kpis
        # a block's accumulators: realized performance, expected performance, KPIs
        self._perf_size = performance.size if performance is not None else 0
        self._exp_size = expected.size if expected is not None else 0
        self._kpi_at = self._perf_size + self._exp_size
        self._block_extra = self._kpi_at + (kpis.size if kpis is not None else 0)
        #: the model's segments: each is one more block of the pane vector (block 0 is the
        #: whole model), with its own events counted after the blocks' accumulators
        self.segments = profile.segments
        self.blocks = 1 + (self.segments.size if self.segments is not None else 0)
        self._segment_layouts: dict[int, CountLayout] = {}
        self._extra = self._block_extra * self.blocks + (self.blocks if self.blocks > 1 else 0)
        size, extra = self.pane_size, self._extra
        self.window: PaneWindow[PaneCounts] = PaneWindow(
            windows.pane,
            windows.size_panes,
            windows.allowed_lateness,
            lambda: PaneCounts.zeros(size, extra),
        )
        self.labels_joined = 0
        self.labels_outside_window = 0
        #: joined labels that are no class the model knows (after normalisation), and one
        self.labels_unknown_class = 0
        self.unknown_label_sample: str | None = None
        self.delay_buckets = np.zeros(len(DELAY_BUCKETS) + 1, dtype=np.int64)
        self.delay_sum = 0.0
        self.events_total = 0
        self.late_total = 0
        self.max_event_time = -math.inf
        self.clock_skew = windows.clock_skew
        #: how far ahead of the wall clock event time may drive the watermark: no further
        #: than allowed_lateness, or the pane of "now" would close before its events came
        self._ahead = min(windows.clock_skew, windows.allowed_lateness)
        #: events more than ``clock_skew`` ahead of the wall clock when they arrived
        self.future_total = 0
        self._recent = np.empty(0, dtype=np.float64)
        #: wall-clock time of the last batch (event time moves on with it when idle)
        self.last_arrival: float | None = None
        self.latency_buckets = np.zeros(len(LATENCY_BUCKETS) + 1, dtype=np.int64)
        self.latency_sum = 0.0
        #: closed panes changed by late labels, not yet taken by :meth:`take_closed`
        self.dirty: set[int] = set()
        #: panes closed since the last :meth:`take_closed` (a catch-up can close and expire
        #: panes in one move: they still have to go out)
        self._closing: dict[int, PaneCounts] = {}

    @property
    def extra_size(self) -> int:
        """Length of a pane's performance-accumulator vector (and segments' event counts)."""
        return self._extra

    @property
    def pane_size(self) -> int:
        """Length of a pane's count vector: the layout once per block."""
        return self.layout.size * self.blocks

    @property
    def model(self) -> str:
        return self.profile.model

    def snapshot(self) -> dict[str, Any]:
        """Plain data (numbers, lists, numpy arrays) that :meth:`restore` reads back."""
        return {
            "events_total": self.events_total,
            "late_total": self.late_total,
            "future_total": self.future_total,
            "max_event_time": self.max_event_time,
            "latency_buckets": self.latency_buckets.copy(),
            "latency_sum": self.latency_sum,
            "labels_joined": self.labels_joined,
            "labels_outside_window": self.labels_outside_window,
            "labels_unknown_class": self.labels_unknown_class,
            "delay_buckets": self.delay_buckets.copy(),
            "delay_sum": self.delay_sum,
            "window": self.window.snapshot(PaneCounts.snapshot),
        }

    def restore(self, data: Mapping[str, Any], *, windows: bool = True) -> None:
        """Replace this monitor's counts with a :meth:`snapshot` taken on the same reference
        (``windows=False``: only the cumulative counters, for a snapshot counted against
        another reference, whose panes do not fit this one's bins)."""
        size, extra = self.pane_size, self._extra
        if windows:
            self.window.restore(data["window"], lambda p: PaneCounts.restore(p, size, extra))
        self.events_total = int(data["events_total"])
        self.late_total = int(data["late_total"])
        self.future_total = int(data.get("future_total", 0))
        self.max_event_time = float(data["max_event_time"])
        self.latency_buckets = np.asarray(data["latency_buckets"], dtype=np.int64).copy()
        self.latency_sum = float(data["latency_sum"])
        self.labels_joined = int(data.get("labels_joined", 0))
        self.labels_outside_window = int(data.get("labels_outside_window", 0))
        self.labels_unknown_class = int(data.get("labels_unknown_class", 0))
        buckets = data.get("delay_buckets")
        if buckets is not None:
            self.delay_buckets = np.asarray(buckets, dtype=np.int64).copy()
        self.delay_sum = float(data.get("delay_sum", 0.0))

    def ingest(self, batch: EventBatch, now: float | None = None) -> bool:
        """Count a batch into its panes; return True when the live window moved.

        With the wall clock ``now``, the watermark is driven by where event time really
        is: a few events far ahead of the rest (the top 1% of the recent ones, at least
        one) do not move it, nor does anything beyond ``now + min(clock_skew,
        allowed_lateness)`` (so events stamped with a correct clock are never made late by
        others from a fast one); such events are
        still counted in their panes, and those ahead of the clock in ``future_total``.
        """
        n = len(batch)
        if n == 0:
            return False
        self.events_total += n
        self._observe_latency(batch.latency_ms)
        panes = self.window.pane_indices(batch.event_time)
        late = self.window.late_mask(panes)
        n_late = int(late.sum())
        if n_late:
            self.late_total += n_late
            keep = ~late
            batch, panes = batch.select(keep), panes[keep]
        if len(batch):
            uniq, local = np.unique(panes, return_inverse=True)
            if self.segments is None:
                self._count_whole(batch, uniq, local.astype(np.intp))
            else:
                self._count_blocks(batch, uniq, local.astype(np.intp))
            self.max_event_time = max(self.max_event_time, self._event_time(batch, now))
        if now is not None:
            self.last_arrival = now
        return self.advance(self.max_event_time)

    def _count_whole(
        self, batch: EventBatch, uniq: NDArray[np.int64], local: NDArray[np.intp]
    ) -> None:
        counts, sums = self.layout.bin_batch(batch, local, uniq.size)
        events = np.bincount(local, minlength=uniq.size)
        for j, index in enumerate(uniq.tolist()):
            extra = np.zeros(self._extra)
            if self.expected is not None or self.kpis is not None:
                self._accumulate(extra, 0, batch, np.flatnonzero(local == j))
            pane = self.window.pane(index)
            pane += PaneCounts(int(events[j]), counts[j], sums[j], extra)

    def _count_blocks(
        self, batch: EventBatch, uniq: NDArray[np.int64], local: NDArray[np.intp]
    ) -> None:
        """Count each event in block 0 and in its segment's block under every field: one
        binning of the batch repeated once per field, keyed by (pane, block)."""
        assert self.segments is not None
        n, b = len(batch), self.blocks
        blocks = np.concatenate([np.zeros((1, n), dtype=np.intp), self.segments.blocks(batch)])
        copies = blocks.shape[0]
        cell = (np.tile(local, copies) * b + blocks.ravel()).astype(np.intp)
        counts, sums = self.layout.bin_batch(
            EventBatch.concat([batch] * copies), cell, uniq.size * b
        )
        counts = counts.reshape(uniq.size, b * self.layout.size)
        sums = sums.reshape(uniq.size, b * self.layout.size)
        events = np.bincount(cell, minlength=uniq.size * b).reshape(uniq.size, b)
        extra = np.zeros((uniq.size, self._extra))
        extra[:, self._block_extra * b :] = events
        if self.expected is not None or self.kpis is not None:
            # one accumulation per (pane, block) group of a sort, not per event
            order = np.argsort(cell, kind="stable")
            keys, starts = np.unique(cell[order], return_index=True)
            for key, part in zip(keys.tolist(), np.split(order, starts[1:]), strict=True):
                j, block = divmod(key, b)
                self._accumulate(extra[j], block * self._block_extra, batch, part % n)
        for j, index in enumerate(uniq.tolist()):
            pane = self.window.pane(index)
            pane += PaneCounts(int(events[j, 0]), counts[j], sums[j], extra[j])

    def _accumulate(
        self, extra: NDArray[np.float64], at: int, batch: EventBatch, rows: NDArray[np.intp]
    ) -> None:
        """Add the expected performance and KPIs of ``batch[rows]`` to the block at ``at``."""
        if self.expected is not None:
            begin = at + self._perf_size
            extra[begin : begin + self._exp_size] = self.expected.accumulate(batch.score[rows])
        if self.kpis is not None:
            begin = at + self._kpi_at
            extra[begin : begin + self.kpis.size] = self.kpis.accumulate(
                self.kpis.columns(batch, rows), batch.score[rows], batch.label[rows]
            )

    def kpi_values(self, batch: EventBatch) -> NDArray[np.float64] | None:
        """What a prediction keeps for its label-aware KPIs until its label joins (``None``
        for a model without such KPIs)."""
        if self.kpis is None or not self.kpis.joined_fields:
            return None
        return self.kpis.joined_values(self.kpis.columns(batch), len(batch))

    def segment_cells(self, batch: EventBatch) -> NDArray[np.float64] | None:
        """Each event's segments as one number, for the label join to keep with the
        prediction (``None`` for a model without segments)."""
        return None if self.segments is None else self.segments.cells(batch)

    def _event_time(self, batch: EventBatch, now: float | None) -> float:
        """How far event time has got, robust to a few events from a fast clock."""
        t = batch.event_time
        if now is None:
            return float(t.max())
        self.future_total += int((t > now + self.clock_skew).sum())
        recent = np.concatenate([self._recent, t[-RECENT_TIMES:]])[-RECENT_TIMES:]
        self._recent = recent
        k = 1 if recent.size == 1 else 2 + recent.size // 100
        robust = float(np.partition(recent, recent.size - k)[recent.size - k])
        return min(robust, now + self._ahead)

    def tick(self, now: float) -> bool:
        """Event time moves on with the wall clock while no event arrives, so a model
        whose live traffic stopped still closes its panes (after ``allowed_lateness``)."""
        if self.last_arrival is None or now <= self.last_arrival:
            return False
        # only for live traffic (event time near the clock at arrival): a backlog being
        # replayed must not turn its own next events late during a pause
        behind = self.last_arrival - self.max_event_time
        if behind > self.window.allowed_lateness + self.window.pane_seconds:
            return False
        idle = self.max_event_time + (now - self.last_arrival)
        return self.advance(min(idle, now + self._ahead))

    @property
    def open_events(self) -> int:
        """Events waiting in panes that have not closed yet."""
        return sum(p.events for p in self.window.open.values())

    def add_joined(self, joined: Joined) -> int:
        """Count labels joined to predictions in their predictions' panes.

        A pane that has closed but is still in the window takes them too (and the window is
        re-evaluated by the caller); returns how many fell on panes already out of it.
        """
        n = len(joined)
        if n == 0:
            return 0
        delays = joined.label_time - joined.prediction_time
        delays = np.maximum(delays[np.isfinite(delays)], 0.0)
        self.delay_buckets += np.bincount(
            np.searchsorted(DELAY_BUCKETS, delays, side="left"), minlength=self.delay_buckets.size
        )
        self.delay_sum += float(delays.sum())
        self.labels_joined += n
        if self.performance is None:
            return 0
        unknown, sample = self.performance.unknown_labels(joined.y_true)
        if unknown:
            self.labels_unknown_class += unknown
            self.unknown_label_sample = sample
        panes = self.window.pane_indices(joined.prediction_time)
        uniq, local = np.unique(panes, return_inverse=True)
        outside = 0
        size = self.pane_size
        blocks = self._joined_blocks(joined)
        values = self._joined_kpi_values(joined)
        for j, index in enumerate(uniq.tolist()):
            m = local == j
            extra = np.zeros(self._extra)
            for block in range(self.blocks):
                rows = m if block == 0 else m & (blocks == block).any(axis=0)
                if block and not rows.any():
                    continue
                at = block * self._block_extra
                extra[at : at + self._perf_size] = self.performance.accumulate(
                    joined.y_true[rows], joined.score[rows], joined.label[rows]
                )
                if values is not None and self.kpis is not None:
                    begin = at + self._kpi_at
                    extra[begin : begin + self.kpis.size] = self.kpis.accumulate_joined(
                        values[rows], joined.score[rows], joined.label[rows], joined.y_true[rows]
                    )
            value = PaneCounts(0, np.zeros(size, dtype=np.int64), np.zeros(size), extra)
            if not self.window.add_to_pane(index, value):
                outside += int(m.sum())
            elif self.window.last_closed is not None and index <= self.window.last_closed:
                self.dirty.add(index)
        self.labels_outside_window += outside
        return outside

    def _joined_kpi_values(self, joined: Joined) -> NDArray[np.float64] | None:
        """Shape ``(pairs, fields)``: what the joined predictions kept for label-aware KPIs
        (NaN where a prediction kept nothing)."""
        if self.kpis is None or not self.kpis.joined_fields:
            return None
        out = np.full((len(joined), len(self.kpis.joined_fields)), np.nan)
        if joined.kpi is not None:
            # a cell is a row of fields (or None): comparing rows with None is elementwise
            kept = np.flatnonzero([row is not None for row in joined.kpi])
            if kept.size:
                out[kept] = np.array(joined.kpi[kept].tolist(), dtype=np.float64)
        return out

    def _joined_blocks(self, joined: Joined) -> NDArray[np.intp]:
        """Shape ``(fields, n)``: the segment blocks of the joined predictions."""
        if self.segments is None or joined.segment is None:
            return np.empty((0, len(joined)), dtype=np.intp)
        return self.segments.blocks_of_cells(joined.segment)

    def advance(self, event_time: float) -> bool:
        """Move the watermark as if an event at ``event_time`` had been seen."""
        before = self.window.last_closed
        for index, pane in self.window.advance(event_time):
            self._closing[index] = pane  # kept until taken, even if it already expired
        return self.window.last_closed != before

    def take_closed(self) -> tuple[tuple[int, PaneCounts], ...]:
        """Copies of the panes closed since the last call and of the closed panes in the
        window that late labels changed, oldest first."""
        if not self.dirty and not self._closing:
            return ()
        out = dict(self._closing)
        out.update((i, p) for i, p in self.window.closed if i in self.dirty)
        self.dirty.clear()
        self._closing.clear()
        return tuple((i, out[i].copy()) for i in sorted(out))

    def mark_all_changed(self) -> None:
        """Every closed pane still in the window goes out with the next :meth:`take_closed`."""
        self.dirty.update(i for i, _ in self.window.closed)

    def _observe_latency(self, latency_ms: NDArray[np.float64]) -> None:
        seconds = latency_ms[np.isfinite(latency_ms) & (latency_ms >= 0)] / 1000.0
        if seconds.size:
            idx = np.searchsorted(LATENCY_BUCKETS, seconds, side="left")
            self.latency_buckets += np.bincount(idx, minlength=self.latency_buckets.size)
            self.latency_sum += float(seconds.sum())

    def evaluate(self, now: float) -> ModelEvaluation:
        """Drift, verdicts and quality of the live window, as an immutable snapshot."""
        return self.evaluate_window(
            self.window.window, now, self.window.watermark, self.window.window_range()
        )

    def evaluate_window(
        self,
        window: PaneCounts,
        now: float,
        watermark: float,
        span: tuple[float, float] | None,
    ) -> ModelEvaluation:
        """The evaluation of a window of this monitor's panes, each segment's included."""
        if self.segments is None:
            return self._evaluate_block(window, now, watermark, span, self.layout, None)
        segments = {
            name: self._evaluate_block(
                self._block(window, i + 1), now, watermark, span, self._segment_layout(i), name
            )
            for i, name in enumerate(self.segments.names)
        }
        whole = self._block(window, 0)
        return replace(
            self._evaluate_block(whole, now, watermark, span, self.layout, None),
            segments=segments,
            segment_mix=self._segment_mix(window),
        )

    def _segment_mix(self, window: PaneCounts) -> dict[str, DriftScore]:
        """Per segment field: Jensen-Shannon distance of the window's segment mix from the
        reference's (a shift of traffic between segments is drift of its own)."""
        assert self.segments is not None
        cuts = self.segments
        events = window.extra[self._block_extra * self.blocks + 1 :]
        share = np.asarray(cuts.reference_share)
        out = {}
        for f, offset in zip(cuts.fields, cuts.offsets, strict=True):
            cur = events[offset - 1 : offset - 1 + f.size]
            ref = share[offset - 1 : offset - 1 + f.size]
            if cur.sum() > 0 and ref.sum() > 0:
                out[f.name] = compare("jensenshannon", ref, cur)
        return out

    def _block(self, window: PaneCounts, block: int) -> PaneCounts:
        """Block ``block`` of a segmented pane, as a pane of one monitored unit."""
        s, e = self.layout.size, self._block_extra
        events = int(np.rint(window.extra[e * self.blocks + block]))
        return PaneCounts(
            events,
            window.counts[block * s : (block + 1) * s],
            window.sums[block * s : (block + 1) * s],
            window.extra[block * e : (block + 1) * e],
        )

    def _segment_layout(self, segment: int) -> CountLayout:
        layout = self._segment_layouts.get(segment)
        if layout is None:
            assert self.segments is not None
            layout = CountLayout(
                self.segments.profile(self.profile, segment), self.layout.range_margin
            )
            self._segment_layouts[segment] = layout
        return layout

    def _evaluate_block(
        self,
        window: PaneCounts,
        now: float,
        watermark: float,
        span: tuple[float, float] | None,
        layout: CountLayout,
        segment: str | None,
    ) -> ModelEvaluation:
        features = tuple(self._evaluate_feature(fs, window) for fs in layout.features)
        prediction: tuple[DriftScore, ...] = ()
        if layout.prediction is not None:
            pslots = layout.prediction
            numerical = pslots.profile.kind is FeatureKind.NUMERICAL
            choice = self.policy.for_feature(pslots.profile.name, numerical)
            prediction = _scores(pslots, window, choice.methods)
        performance: dict[str, float] = {}
        estimated: dict[str, float] = {}
        coverage = None
        labelled = 0
        if self.performance is not None:
            acc = window.extra[: self._perf_size]
            performance = self.performance.metrics(acc)
            labelled = self.performance.pairs(acc)
            coverage = labelled / window.events if window.events else None
        if self.expected is not None:
            estimated = self.expected.metrics(window.extra[self._perf_size : self._kpi_at])
        kpis: dict[str, float] = {}
        if self.kpis is not None:
            seconds = span[1] - span[0] if span is not None else None
            kpis = self.kpis.values(window.extra[self._kpi_at : self._block_extra], seconds)
        return ModelEvaluation(
            model=self.model,
            evaluated_at=now,
            watermark=watermark,
            window_start=span[0] if span else None,
            window_end=span[1] if span else None,
            window_events=window.events,
            min_events=self.policy.min_events,
            features=features,
            prediction=prediction,
            performance=performance,
            estimated=estimated,
            label_coverage=coverage,
            labelled_events=labelled,
            estimated_calibrated=(
                None if self.expected is None else self.expected.calibration is not None
            ),
            segment=segment,
            kpis=kpis,
            reference_share=(
                None
                if segment is None or self.segments is None
                else self.segments.reference_share[self.segments.names.index(segment)]
            ),
        )

    def _evaluate_feature(self, fs: FeatureSlots, window: PaneCounts) -> FeatureEvaluation:
        fp = fs.profile
        numerical = fp.kind is FeatureKind.NUMERICAL
        choice = self.policy.for_feature(fp.name, numerical)
        scores = _scores(fs, window, choice.methods)
        decision = next((s for s in scores if s.method == choice.method), None)
        drifted = None
        # judged on the feature's own values: a feature missing in 97% of a 1 000-event
        # window has ~30 values, too few for a verdict
        values = int(window.counts[fs.values].sum())
        threshold, how = threshold_for(fp, choice, values, self.feature_alpha)
        if decision is not None and values >= self.policy.min_events:
            drifted = is_drifted(decision, threshold) and decision.score >= choice.effect
        n = window.events

        def ratio(count: int) -> float:
            return count / n if n else 0.0

        new = 0
        if not numerical:
            new = int(window.counts[fs.start + fp.bins.n_value_bins - 1])
        return FeatureEvaluation(
            name=fp.name,
            kind=fp.kind.value,
            method=choice.method,
            threshold=threshold,
            threshold_kind=how,
            min_effect=choice.effect,
            scores=scores,
            drifted=drifted,
            events=values,
            missing_ratio=ratio(int(window.counts[fs.quality("missing")])),
            type_mismatch_ratio=ratio(int(window.counts[fs.quality("type_mismatch")])),
            nonfinite_ratio=ratio(int(window.counts[fs.quality("nonfinite")])),
            out_of_range_ratio=ratio(int(window.counts[fs.quality("out_of_range")])),
            new_category_ratio=ratio(new),
            min_events=self.policy.min_events,
            profile=fp,
            window_counts=window.counts[fs.values].copy(),
            window_sums=window.sums[fs.values].copy(),
        )


def threshold_for(
    fp: FeatureProfile, choice: MethodChoice, values: int, alpha: float
) -> tuple[float, str]:
    """The threshold a window with ``values`` values of the feature is judged by, and how
    it was set: the configured number ("fixed"), the feature's share of the false-alarm
    budget for a test's p-value ("alpha"), or the calibrated quantile ("calibrated")."""
    if choice.threshold is not None:
        return choice.threshold, "fixed"
    if choice.method in TESTS:
        return alpha, "alpha"
    if values <= 0:
        return math.nan, "calibrated"
    return fp.null_table().threshold(choice.method, values, alpha), "calibrated"


def _scores(
    fs: FeatureSlots, window: PaneCounts, methods: tuple[str, ...]
) -> tuple[DriftScore, ...]:
    """Every requested method on the window's value bins (no scores for an empty window)."""
    return feature_scores(fs.profile, window.counts[fs.values], methods)


def feature_scores(
    fp: FeatureProfile,
    cur: NDArray[np.int64],
    methods: tuple[str, ...],
) -> tuple[DriftScore, ...]:
    """Every requested method on one feature's window counts."""
    if cur.sum() == 0 or fp.counts.sum() == 0:
        return ()
    out = []
    for method in methods:
        if method in _FINE_METHODS and fp.kind is FeatureKind.NUMERICAL:
            # both sides' mass at the same points (see FeatureProfile.wasserstein_points)
            points = fp.wasserstein_points()
            out.append(
                compare(
                    method, fp.counts, cur, ref_points=points, cur_points=points, ref_std=fp.std
                )
            )
        else:
            starts = fp.bins.coarse_starts
            out.append(
                compare(method, np.add.reduceat(fp.counts, starts), np.add.reduceat(cur, starts))
            )
    return tuple(out)
