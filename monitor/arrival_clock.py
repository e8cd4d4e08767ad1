"""When a recorded event would have arrived: the clock of an offline replay.

A file of events has no arrival times, only the times the events carry. A replay needs a
clock anyway (validation, watermark caps, idle panes and alert ``for:`` durations all
read one), so each record is given an arrival time from the times around it: the median
time of the ``span`` records before it, itself and the ``span`` records after it in its
file. For a file in time order that is the record's own time (or a neighbour's, next to
a time that is unreadable or wrong); one record stamped by a wrong clock (a year ahead,
milliseconds for seconds) does not move it, and a real pause in the traffic moves it at
the first record after the pause. Records whose time cannot be read (``None``) take the
median of their neighbours too.

>>> times = [1.0, 2.0, 9e9, 4.0, 5.0, 6.0, 7.0, None, 900.0, 901.0, 902.0, 903.0]
>>> [t for t, _ in arrival_times([(t, i) for i, t in enumerate(times)], span=2)]
[1.0, 2.0, 4.0, 5.0, 6.0, 5.5, 6.5, 453.5, 900.5, 901.5, 902.0, 903.0]
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["SPAN", "arrival_times"]

T = TypeVar("T")

#: records taken on each side of a record for its arrival time
SPAN = 50


def arrival_times(
    records: Iterable[tuple[float | None, T]], span: int = SPAN
) -> Iterator[tuple[float | None, T]]:
    """``(arrival time, item)`` for each ``(time, item)``, in the same order.

    Near either end of the file, as many records are taken on each side as there are on
    the shorter one. Arrival times are not made monotonic here (the caller's clock takes
    their running maximum); it is ``None`` when no record around has a readable time.
    """
    ahead: deque[tuple[float | None, T]] = deque()
    window: deque[float | None] = deque()  # times of the records around the next one out
    ordered: list[float] = []  # the readable times of ``window``, sorted
    it = iter(records)
    done = False
    behind = 0  # records already given out that are still in the window
    while True:
        while not done and len(ahead) <= span:
            record = next(it, None)
            if record is None:
                done = True
                break
            ahead.append(record)
            window.append(record[0])
            if record[0] is not None:
                bisect.insort(ordered, record[0])
        if not ahead:
            return
        _, item = ahead.popleft()
        k = min(behind, len(ahead), span)  # as many records on each side
        around = ordered
        if k < span:  # near the start or the end of the file
            near = (window[j] for j in range(behind - k, behind + k + 1))
            around = sorted(t for t in near if t is not None) or ordered
        yield _median(around), item
        behind += 1
        if behind > span:
            gone = window.popleft()
            if gone is not None:
                del ordered[bisect.bisect_left(ordered, gone)]
            behind -= 1


def _median(ordered: list[float]) -> float | None:
    n = len(ordered)
    if n == 0:
        return None
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0
