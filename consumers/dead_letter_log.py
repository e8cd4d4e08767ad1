"""Dead-letter logging that stays quiet at scale: one line per model and reason per
interval, with one sample record, instead of one line per record.

The first record of a (model, reason) in an interval is logged at once, so a new kind of
bad input shows up immediately; the others are counted and summed up in one line when the
interval ends (:meth:`DeadLetterLog.flush`, called by the consumer loop on every poll).
Every record is counted in ``driftline_events_invalid_total`` whatever is logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["DeadLetterLog"]

log = logging.getLogger("driftline.consumer")

#: seconds between summary lines of one model and reason
INTERVAL = 60.0


@dataclass
class _Pending:
    count: int
    sample: dict[str, Any]


class DeadLetterLog:
    def __init__(
        self, interval: float = INTERVAL, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.interval = interval
        self.clock = clock
        self._opened: dict[tuple[str, str], float] = {}
        self._pending: dict[tuple[str, str], _Pending] = {}

    def record(
        self, model: str, reason: str, topic: str, partition: int, offset: int, detail: str
    ) -> None:
        key = (model, reason)
        sample = {
            "model": model,
            "reason": reason,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "detail": detail[:200],
        }
        now = self.clock()
        if key not in self._opened:
            self._opened[key] = now
            log.warning("dead-lettered record", extra=sample)
            return
        pending = self._pending.get(key)
        if pending is None:
            self._pending[key] = _Pending(1, sample)
        else:
            pending.count += 1

    def flush(self, force: bool = False) -> None:
        """Sum up the intervals that ended (all of them with ``force``)."""
        now = self.clock()
        for key, opened in list(self._opened.items()):
            if not force and now - opened < self.interval:
                continue
            del self._opened[key]
            pending = self._pending.pop(key, None)
            if pending is not None:
                log.warning(
                    "dead-lettered %d more records (%s, %s) in %.0f s; one of them:",
                    pending.count,
                    key[0],
                    key[1],
                    now - opened,
                    extra={**pending.sample, "count": pending.count},
                )
