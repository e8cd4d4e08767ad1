"""Pane merge and expiry: the sliding window equals the histogram of the events inside it."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.events import EventBatch
from monitor.model_state import ModelMonitor, WindowSpec
from monitor.reference import build_profile
from monitor.window import PaneWindow


class Bag:
    """A pane holding the multiset of event ids it saw."""

    def __init__(self) -> None:
        self.ids: list[int] = []

    def __iadd__(self, other: Bag) -> Bag:
        self.ids = self.ids + other.ids
        return self

    def __isub__(self, other: Bag) -> Bag:
        remaining = list(self.ids)
        for i in other.ids:
            remaining.remove(i)
        self.ids = remaining
        return self


batches_of_times = st.lists(
    st.lists(st.floats(0, 200, allow_nan=False), min_size=1, max_size=20), min_size=1, max_size=12
)


@settings(max_examples=200, deadline=None)
@given(
    batches=batches_of_times,
    pane=st.sampled_from([1.0, 2.5, 10.0]),
    size=st.integers(1, 6),
    lateness=st.sampled_from([0.0, 1.0, 7.5]),
)
def test_window_holds_exactly_the_non_late_events_of_its_panes(batches, pane, size, lateness):
    w: PaneWindow[Bag] = PaneWindow(pane, size, lateness, Bag)
    accepted: dict[int, float] = {}
    late: set[int] = set()
    watermark, max_t, next_id = -math.inf, -math.inf, 0
    for times in batches:
        for t in times:
            # independent rule: late when the pane ended at or before the watermark
            if (math.floor(t / pane) + 1) * pane <= watermark:
                late.add(next_id)
            else:
                w.pane(w.pane_index(t)).ids.append(next_id)
                accepted[next_id] = t
            next_id += 1
        max_t = max(max_t, *times)
        w.advance(max_t)
        watermark = max(watermark, max_t - lateness)
        assert w.watermark == watermark
        span = w.window_range()
        if span is None:
            assert w.window.ids == []
            continue
        start, end = span
        assert end <= watermark + 1e-9
        assert watermark < end + pane
        inside = sorted(
            i for i, t in accepted.items() if start <= math.floor(t / pane) * pane < end
        )
        assert sorted(w.window.ids) == inside
        # open panes hold the accepted events not yet closed
        pending = sorted(i for p in w.open.values() for i in p.ids)
        assert pending == sorted(
            i for i, t in accepted.items() if (math.floor(t / pane) + 1) * pane > watermark
        )
    assert len(accepted) + len(late) == next_id


def _profile():
    rng = np.random.default_rng(1)
    return build_profile(
        "m",
        {
            "x": rng.normal(size=2000),
            "c": rng.choice(np.array(["a", "b", "c"], dtype=object), 2000),
        },
    )


def _batch(times, xs, cs):
    n = len(times)
    return EventBatch(
        model="m",
        event_time=np.asarray(times, dtype=np.float64),
        event_id=[str(i) for i in range(n)],
        model_version=np.full(n, None, dtype=object),
        numerical={"x": np.asarray(xs, dtype=np.float64)},
        categorical={"c": np.asarray(cs, dtype=object)},
        score=np.full(n, np.nan),
        label=np.full(n, None, dtype=object),
        latency_ms=np.full(n, np.nan),
    )


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(
        st.lists(
            st.tuples(
                st.floats(0, 100, allow_nan=False),
                st.one_of(st.none(), st.floats(-4, 4, allow_nan=False)),
                st.sampled_from(["a", "b", "c", "zz", None]),
            ),
            min_size=1,
            max_size=30,
        ),
        min_size=1,
        max_size=8,
    ),
    size=st.integers(1, 5),
    lateness=st.sampled_from([0.0, 3.0]),
)
def test_model_window_counts_equal_histogram_of_events_inside(data, size, lateness):
    profile = _profile()
    monitor = ModelMonitor(profile, WindowSpec(5.0, 5.0 * size, lateness))
    fx, fc = profile.features
    accepted: list[tuple[float, float | None, str | None]] = []
    watermark = -math.inf
    for rows in data:
        times, xs, cs = zip(*rows, strict=True)
        for row in rows:
            if (math.floor(row[0] / 5.0) + 1) * 5.0 > watermark:
                accepted.append(row)
        monitor.ingest(_batch(times, [np.nan if x is None else x for x in xs], list(cs)))
        watermark = max(watermark, max(times) - lateness)
    span = monitor.window.window_range()
    window = monitor.window.window
    inside = [r for r in accepted if span and span[0] <= math.floor(r[0] / 5.0) * 5.0 < span[1]]
    assert window.events == len(inside)
    xs = np.array([r[1] for r in inside if r[1] is not None], dtype=np.float64)
    slots = monitor.layout.features
    expected_x = np.histogram(xs, bins=np.concatenate(([-np.inf], fx.bins.edges, [np.inf])))[0]
    # np.histogram closes bins on the left like searchsorted(side="right") does
    assert window.counts[slots[0].values].tolist() == expected_x.tolist()
    assert window.counts[slots[0].quality("missing")] == sum(r[1] is None for r in inside)
    np.testing.assert_allclose(window.sums[slots[0].values].sum(), xs.sum(), atol=1e-6)
    cats = list(fc.bins.categories)
    expected_c = [sum(r[2] == c for r in inside) for c in cats]
    expected_c.append(0)  # no "other" known category exists in a 3-category reference
    expected_c.append(sum(r[2] == "zz" for r in inside))
    assert window.counts[slots[1].values].tolist() == expected_c
    assert window.counts[slots[1].quality("missing")] == sum(r[2] is None for r in inside)
    assert monitor.events_total == sum(len(rows) for rows in data)
    assert monitor.late_total == monitor.events_total - len(accepted)
