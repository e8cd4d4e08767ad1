"""Stage-2 merge: aligned by pane in event time, idempotent, idle partitions left behind."""

from __future__ import annotations

import math
import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from monitor.events import EventBatch
from monitor.model_state import ModelMonitor, WindowSpec
from monitor.pane_merge import PaneMerge, PaneUpdate
from monitor.panes import PaneCounts
from monitor.reference import build_profile
from monitor.schema import FeatureKind, FeatureSpec

PANE, SIZE_PANES = 10.0, 3


def pane(events: int, size: int = 4) -> PaneCounts:
    rng = np.random.default_rng(events)
    counts = rng.integers(0, 5, size=size).astype(np.int64)
    return PaneCounts(events, counts, counts * 0.5)


def history(partitions: int, panes: int, seed: int) -> list[PaneUpdate]:
    """Each partition closes its panes one by one, and a late label changes some pane
    again later: a version-ordered stream of updates per partition."""
    rnd = random.Random(seed)
    out = []
    for p in range(partitions):
        version = 0
        for i in range(panes):
            version += rnd.randint(1, 50)
            changed = [(i, pane(version))]
            if i and rnd.random() < 0.3:  # a late label changes an older pane
                changed.append((i - 1, pane(version + 7)))
            out.append(PaneUpdate("m", p, version, (i + 1) * PANE, i, 0.0, "f", tuple(changed)))
    return out


def merged(updates: list[PaneUpdate], now: float = 1.0) -> tuple[int | None, int, list[int]]:
    m = PaneMerge(PANE, SIZE_PANES, idle_timeout=60.0)
    for u in updates:
        m.apply(u)
        m.advance(now)
    w = m.window(lambda: PaneCounts.zeros(4))
    return m.last_closed, w.events, w.counts.tolist()


@settings(max_examples=60, deadline=None)
@given(
    partitions=st.integers(1, 4),
    panes=st.integers(1, 8),
    seed=st.integers(0, 10_000),
    duplicates=st.integers(0, 20),
)
def test_duplicated_reordered_and_replayed_updates_give_the_same_window(
    partitions, panes, seed, duplicates
):
    ordered = history(partitions, panes, seed)
    rnd = random.Random(seed + 1)
    # per partition, order is kept as Kafka keeps it; partitions interleave at random,
    # and records are replayed (a restart from an older checkpoint) or duplicated
    mixed = list(ordered) + [rnd.choice(ordered) for _ in range(duplicates)]
    rnd.shuffle(mixed)
    expected = merged(ordered)
    # the final state does not depend on the order once every newest version arrived
    assert merged(mixed + ordered[-partitions * 2 :] + ordered)[1:] == expected[1:]
    assert merged(sorted(mixed, key=lambda u: -u.version) + ordered)[1:] == expected[1:]


def test_window_is_the_newest_version_of_each_pane_summed():
    updates = history(3, 6, seed=4)
    newest: dict[tuple[int, int], tuple[int, PaneCounts]] = {}
    for u in updates:
        for i, p in u.panes:
            if (i, u.partition) not in newest or u.version >= newest[(i, u.partition)][0]:
                newest[(i, u.partition)] = (u.version, p)
    last, events, counts = merged(updates)
    assert last == 5
    want = [p for (i, _), (_, p) in newest.items() if last - SIZE_PANES < i <= last]
    assert events == sum(p.events for p in want)
    assert counts == np.sum([p.counts for p in want], axis=0).tolist()


def test_a_lagging_partition_holds_the_merged_watermark_back_until_idle():
    m = PaneMerge(PANE, SIZE_PANES, idle_timeout=60.0)
    m.apply(PaneUpdate("m", 0, 1, 995.0, 98, active_at=100.0, fingerprint="f"))
    m.apply(PaneUpdate("m", 1, 1, 85.0, 7, active_at=10.0, fingerprint="f", panes=((7, pane(5)),)))
    m.advance(now=50.0)
    assert m.last_closed == 7  # partition 1 is still active: the window waits for it
    assert m.window_range() == (50.0, 80.0)
    m.advance(now=150.0)  # partition 1 silent for 140 s > 60 s: idle
    assert m.last_closed == 98
    assert m.window_range() == (960.0, 990.0)
    # its old panes never enter the window, and a late record of them is dropped
    assert m.window(lambda: PaneCounts.zeros(4)).events == 0
    m.apply(PaneUpdate("m", 1, 2, 85.0, 7, 10.0, "f", ((6, pane(3)),)))
    assert m.window(lambda: PaneCounts.zeros(4)).events == 0
    # the merged watermark never moves back when it wakes up
    m.apply(PaneUpdate("m", 1, 3, 905.0, 89, active_at=151.0, fingerprint="f"))
    m.advance(now=152.0)
    assert m.last_closed == 98


def test_snapshot_restore_round_trip():
    updates = history(2, 5, seed=9)
    m = PaneMerge(PANE, SIZE_PANES, 60.0)
    for u in updates:
        m.apply(u)
    m.advance(1.0)
    fresh = PaneMerge(PANE, SIZE_PANES, 60.0)
    fresh.restore(m.snapshot(), size=4, extra=0)
    zeros = lambda: PaneCounts.zeros(4)  # noqa: E731
    assert fresh.window(zeros).counts.tolist() == m.window(zeros).counts.tolist()
    assert fresh.window_range() == m.window_range()


def _batch(x: np.ndarray, t: np.ndarray) -> EventBatch:
    n = len(x)
    return EventBatch(
        model="m",
        event_id=[str(i) for i in range(n)],
        event_time=t,
        model_version=np.full(n, None, dtype=object),
        latency_ms=np.full(n, np.nan),
        score=np.full(n, np.nan),
        label=np.full(n, None, dtype=object),
        numerical={"x": x},
        categorical={},
    )


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), partitions=st.integers(1, 4))
def test_partition_monitors_merged_equal_a_direct_histogram(seed, partitions):
    """Events split over partitions, each binned by its own monitor; the merged window
    counts exactly the events of the aligned panes, checked with numpy."""
    rng = np.random.default_rng(seed)
    profile = build_profile(
        "m", {"x": rng.normal(size=500)}, [FeatureSpec("x", FeatureKind.NUMERICAL)]
    )
    spec = WindowSpec(PANE, PANE * SIZE_PANES, 0.0)
    monitors = [ModelMonitor(profile, spec) for _ in range(partitions)]
    merge = PaneMerge(PANE, SIZE_PANES, idle_timeout=1e9)
    n = 600
    t = np.sort(rng.uniform(0, 100, size=n))
    x = rng.standard_t(2, size=n)  # heavy tails: values beyond the reference's range
    part = rng.integers(0, partitions, size=n)
    version = 0
    for lo in range(0, n, 50):
        for p in range(partitions):
            sel = part[lo : lo + 50] == p
            if not sel.any():
                continue
            m = monitors[p]
            m.ingest(_batch(x[lo : lo + 50][sel], t[lo : lo + 50][sel]))
            version += 1
            w = m.window
            merge.apply(
                PaneUpdate("m", p, version, w.watermark, w.last_closed, 0.0, "f", m.take_closed())
            )
    merge.advance(now=0.0)
    if merge.last_closed is None:
        return
    lc = merge.last_closed
    assert lc == min(m.window.last_closed for m in monitors if m.window.last_closed is not None)
    in_window = (np.floor(t / PANE) > lc - SIZE_PANES) & (np.floor(t / PANE) <= lc)
    window = merge.window(lambda: PaneCounts.zeros(monitors[0].layout.size))
    assert window.events == int(in_window.sum())
    fs = monitors[0].layout.features[0]
    edges = profile.features[0].bins.edges  # type: ignore[union-attr]
    want = np.bincount(np.searchsorted(edges, x[in_window], side="right"), minlength=edges.size + 1)
    assert window.counts[fs.values].tolist() == want.tolist()
    assert math.isclose(
        window.sums[fs.values].sum(), x[in_window].sum(), rel_tol=1e-9, abs_tol=1e-9
    )
