"""Event time against bad clocks, silence and unit mistakes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from consumers.decoding import BatchDecoder, GroundTruthDecoder, Reason
from monitor.events import EventBatch
from monitor.model_state import ModelMonitor, WindowSpec
from monitor.reference import build_profile
from monitor.schema import FeatureKind, FeatureSpec

NOW = 1_700_000_000.0
PANE, SIZE, LATENESS = 60.0, 3600.0, 300.0


def monitor() -> ModelMonitor:
    rng = np.random.default_rng(0)
    profile = build_profile(
        "m", {"x": rng.normal(size=1000)}, [FeatureSpec("x", FeatureKind.NUMERICAL)]
    )
    return ModelMonitor(profile, WindowSpec(PANE, SIZE, LATENESS, clock_skew=60.0))


def batch(t: np.ndarray) -> EventBatch:
    n = len(t)
    return EventBatch(
        model="m",
        event_time=np.asarray(t, dtype=float),
        event_id=[str(i) for i in range(n)],
        model_version=np.full(n, None, dtype=object),
        numerical={"x": np.zeros(n)},
        categorical={},
        score=np.full(n, np.nan),
        label=np.full(n, None, dtype=object),
        latency_ms=np.full(n, np.nan),
    )


def live(m: ModelMonitor, start: float, seconds: int, rate: int = 2) -> int:
    """Live traffic: ``rate`` events a second stamped with the wall clock, one batch a second."""
    late = m.late_total
    for s in range(seconds):
        now = start + s
        m.ingest(batch(np.full(rate, now)), now=now)
    return m.late_total - late


def test_one_event_fifty_minutes_ahead_does_not_blind_the_model():
    m = monitor()
    live(m, NOW, 120)
    m.ingest(batch(np.array([NOW + 120 + 3000.0])), now=NOW + 120)  # a fast clock, 50 min
    assert m.future_total == 1
    assert live(m, NOW + 121, 600) == 0  # the next 10 minutes of on-time events all count
    assert m.window.watermark <= NOW + 721 + 60 - LATENESS


def test_fifty_timestamps_two_minutes_ahead_are_counted_and_do_not_make_others_late():
    m = monitor()
    live(m, NOW, 60)
    m.ingest(batch(np.full(50, NOW + 60 + 120.0)), now=NOW + 60)
    assert m.future_total == 50
    assert live(m, NOW + 61, 300) == 0


def test_a_few_outliers_in_a_replayed_backlog_do_not_move_the_watermark():
    """Old traffic replayed (no wall-clock bound applies): the top 1% of recent event
    times, and at least one, are not trusted."""
    m = monitor()
    old = NOW - 86400
    t = old + np.arange(1000) * 0.5
    t[500] = old + 40_000  # one event from a broken clock
    m.ingest(batch(t[:600]), now=NOW)
    assert m.window.watermark < old + 600 * 0.5
    assert m.late_total == 0
    m.ingest(batch(t[600:]), now=NOW)
    assert m.late_total == 0


def test_windows_move_with_the_clock_when_traffic_stops():
    m = monitor()
    live(m, NOW, 600)
    before = m.window.last_closed
    assert m.open_events > 0  # the newest panes wait for allowed_lateness
    assert not m.tick(NOW + 600)  # no time has passed
    m.tick(NOW + 600 + LATENESS + 2 * PANE)
    assert m.window.last_closed is not None
    assert before is not None
    assert m.window.last_closed > before
    assert m.open_events == 0  # every event's pane has closed: nothing is held back


def test_a_replayed_backlog_does_not_move_with_the_clock():
    m = monitor()
    old = NOW - 86400
    m.ingest(batch(old + np.arange(600.0)), now=NOW)
    closed = m.window.last_closed
    assert not m.tick(NOW + 3600)  # a pause in a replay: its next events stay on time
    assert m.window.last_closed == closed


def _prediction(ts: object, latency: object = None) -> bytes:
    event = {"event_id": "a", "model": "m", "timestamp": ts, "features": {"x": 1.0}}
    if latency is not None:
        event["latency_ms"] = latency
    event["prediction"] = 0.5
    return json.dumps(event).encode()


@pytest.mark.parametrize(("factor", "hint"), [(1000, "milliseconds?"), (1e6, "microseconds?")])
def test_timestamps_in_milliseconds_are_refused_with_a_hint(factor, hint):
    d = BatchDecoder({"m": [FeatureSpec("x", FeatureKind.NUMERICAL)]}, max_future=3600)
    out = d.decode([_prediction(NOW * factor)], [NOW], now=NOW)
    (inv,) = out.invalid
    assert inv.reason == Reason.TIMESTAMP_OUT_OF_RANGE
    assert hint in inv.message


def test_latency_out_of_range_is_refused():
    d = BatchDecoder({"m": [FeatureSpec("x", FeatureKind.NUMERICAL)]}, max_future=3600)
    out = d.decode(
        [_prediction(NOW, 1e308), _prediction(NOW, -5), _prediction(NOW, 12.5)], [NOW] * 3, now=NOW
    )
    assert [i.index for i in out.invalid] == [0, 1]
    assert all("latency_ms" in i.message for i in out.invalid)
    assert len(out.batches["m"]) == 1


def test_ground_truth_times_get_the_prediction_range_checks():
    d = GroundTruthDecoder(["m"], max_future=3600, max_age=7 * 86400)
    values = [
        json.dumps({"event_id": "a", "model": "m", "label": "1", "timestamp": t}).encode()
        for t in (1e12, NOW, NOW - 30 * 86400)
    ]
    out = d.decode(values, [NOW] * 3, now=NOW)
    assert [i.index for i in out.invalid] == [0, 2]
    assert "milliseconds?" in out.invalid[0].message
    assert out.valid == 1


def test_a_fast_clock_cannot_close_the_pane_of_now_when_lateness_is_short():
    """clock_skew (60 s) longer than allowed_lateness (5 s): the watermark still stays at
    or behind the wall clock, so events stamped now are not late."""
    rng = np.random.default_rng(0)
    profile = build_profile(
        "m", {"x": rng.normal(size=1000)}, [FeatureSpec("x", FeatureKind.NUMERICAL)]
    )
    m = ModelMonitor(profile, WindowSpec(10.0, 60.0, 5.0, clock_skew=60.0))
    m.ingest(batch(np.full(50, NOW + 120.0)), now=NOW)  # the very first events: all ahead
    assert m.future_total == 50
    assert m.window.watermark <= NOW
    assert live(m, NOW + 1, 120) == 0
