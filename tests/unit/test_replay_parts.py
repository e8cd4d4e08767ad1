"""The pure parts of ``driftline replay``: arrival times and the window log."""

from __future__ import annotations

import numpy as np

from monitor.arrival_clock import arrival_times
from monitor.evaluation import ModelEvaluation
from monitor.window_log import AlertChange, WindowLog


def _arrivals(times: list[float | None], span: int = 5) -> list[float | None]:
    return [t for t, _ in arrival_times([(t, i) for i, t in enumerate(times)], span)]


def test_a_file_in_time_order_arrives_at_its_own_times():
    times = np.sort(np.random.default_rng(1).uniform(0, 1000, 500)).tolist()
    assert _arrivals(times, span=50) == times


def test_a_wrong_clock_does_not_move_time_and_a_pause_does_at_once():
    times: list[float | None] = [float(t) for t in range(100)]
    times[40] = 1.7e12  # milliseconds
    times[60] = 0.0  # a clock left at the epoch
    times += [float(t) for t in range(100_000, 100_100)]  # after a pause
    got = _arrivals(times, span=5)
    # a record of the wrong clock and its neighbours arrive within a record of their times
    assert all(abs(g - i) <= 1 for i, g in enumerate(got[:100]) if g is not None)
    assert (got[99], got[100]) == (99.0, 100_000.0)


def test_unreadable_times_take_their_neighbours():
    assert _arrivals([None, 5.0, None, 7.0, None], span=1) == [5.0, 5.0, 6.0, 7.0, 7.0]
    assert _arrivals([None, None], span=3) == [None, None]


def _evaluation(end: float, evaluated_at: float = 0.0, events: int = 10) -> ModelEvaluation:
    return ModelEvaluation(
        model="m",
        evaluated_at=evaluated_at,
        watermark=end,
        window_start=end - 600.0,
        window_end=end,
        window_events=events,
        min_events=1,
        features=(),
    )


def _change(at: float) -> AlertChange:
    return AlertChange("m", "Drift", "firing", at, 1.0, {"model": "m"})


def test_one_record_per_window_with_its_newest_evaluation_and_its_alerts():
    log = WindowLog()
    assert log.evaluated(_evaluation(60.0)) is None
    log.alerted([_change(61.0)])
    newer = _evaluation(60.0, evaluated_at=5.0, events=12)  # late labels: same window
    assert log.evaluated(newer) is None
    done = log.evaluated(_evaluation(120.0))
    assert done is not None
    assert done.evaluation is newer
    assert done.alerts == [_change(61.0)]
    log.alerted([_change(125.0), AlertChange("other", "Drift", "firing", 1.0, 1.0, {})])
    (last,) = log.close()
    assert last.evaluation.window_end == 120.0
    assert last.alerts == [_change(125.0)]
    assert log.close() == []
