"""Webhook delivery from a durable outbox, on one daemon thread per destination.

``Dispatcher.submit`` writes the notification to the :class:`~alerts.outbox.Outbox` and
returns: the consumer never waits for a receiver. Each destination (sink or retraining
target) has a queue and a thread of its own, so a slow or stalling receiver delays only
its own notifications. Each attempt is one request bounded by :mod:`alerts.bounded_http`:
the destination's timeout is a deadline for the whole exchange, and little of an answer's
body is read. Requests carry the destination's bearer token (never stored in the
outbox), are signed with Standard Webhooks headers when the destination has a secret,
and carry the same ``webhook-id`` on every attempt. Timeouts, connection errors,
408, 429 and 5xx are retried with exponential backoff and full jitter (a ``Retry-After``
in seconds or as an HTTP date is waited at least); any other 4xx fails at once; 410 Gone
disables the destination until the next start. Each attempt's outcome is counted per
destination for ``driftline_webhook_deliveries_total``: success, retry, failed, dropped
(abandoned unsent: unknown or disabled destination, too old, outbox full) or disabled.

An outbox that cannot be written (a full disk, a store that is down) is an operational
error, not a reason to stop: the notification is delivered from memory all the same, the
write is retried with backoff until it succeeds or the notification is delivered, and
each failed write is logged and counted (``driftline_outbox_write_errors_total``).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

import httpx
from standardwebhooks import Webhook

from alerts import bounded_http
from alerts.destinations import Destination
from alerts.exceptions import CredentialsError, OutboxError
from alerts.outbox import Notification, Outbox

__all__ = ["Dispatcher", "backoff_delay", "retry_after_seconds"]

log = logging.getLogger("driftline.alerts.delivery")

Outcome = Literal["success", "retry", "failed", "dropped", "disabled"]
_RETRY_STATUS = frozenset({408, 429})


def backoff_delay(attempt: int, base: float, cap: float, rand: Callable[[], float]) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2**(attempt - 1))) for attempt 1, 2, ...

    >>> [backoff_delay(a, 1.0, 5.0, lambda: 0.999) for a in (1, 2, 3, 4)]
    [0.999, 1.998, 3.996, 4.995]
    """
    return rand() * min(cap, base * 2.0 ** min(attempt - 1, 62))


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait (delay-seconds or an HTTP date).

    >>> retry_after_seconds("2", 0.0), retry_after_seconds("Thu, 01 Jan 1970 00:00:30 GMT", 10.0)
    (2.0, 20.0)
    >>> retry_after_seconds("soon", 0.0) is None
    True
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


@dataclass
class _Pending:
    notification: Notification
    due: float
    attempts: int = 0


@dataclass
class _Lane:
    """The queue of one destination and the thread that sends it."""

    destination: Destination
    #: notified when a notification for this destination is scheduled, or on stop
    wake: threading.Condition
    client: httpx.Client
    #: (due, sequence, notification id); entries of settled notifications are skipped
    heap: list[tuple[float, int, str]] = field(default_factory=list)
    thread: threading.Thread | None = None


class Dispatcher:
    """Delivers the notifications of an outbox, one daemon thread per destination.

    ``clock`` and ``rand`` are injectable; with ``start=False`` no thread runs and a test
    drives delivery with :meth:`pump` and a fake clock.
    """

    def __init__(
        self,
        outbox: Outbox,
        destinations: Iterable[Destination],
        *,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        backoff_base: float = 1.0,
        backoff_max: float = 300.0,
        max_attempts: int = 20,
        max_age: float = 86400.0,
        max_retry_after: float = 3600.0,
        max_pending: int = 10_000,
        start: bool = True,
    ) -> None:
        self._outbox = outbox
        #: notifications the outbox refused: id -> (failed writes, when to try again)
        self._unsaved: dict[str, tuple[int, float]] = {}
        self._write_errors = 0
        self._clock, self._rand = clock, rand
        self._backoff = (backoff_base, backoff_max)
        self._max_attempts, self._max_age = max_attempts, max_age
        self._max_retry_after, self._max_pending = max_retry_after, max_pending
        #: one lock for all state; ``_cond`` tells waiters that something settled or loaded
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self._lanes = {
            d.name: _Lane(d, threading.Condition(self._lock), bounded_http.new_client())
            for d in destinations
        }
        self._items: dict[str, _Pending] = {}
        self._seq = itertools.count()
        self._disabled: set[str] = set()
        self._deliveries: Counter[tuple[str, str]] = Counter()
        self._retraining: Counter[tuple[str, str]] = Counter()
        self._stopping = False
        self._started = start
        #: the outbox of an earlier run is read by a thread of its own (retried while the
        #: store is unreachable), or here when no thread runs; lanes send once it is read
        self._loaded = False
        self._loader: threading.Thread | None = None
        if not start:
            self._load()
            return
        self._loader = threading.Thread(
            target=self._run_loader, name="driftline-webhooks-outbox", daemon=True
        )
        self._loader.start()
        for lane in self._lanes.values():
            lane.thread = threading.Thread(
                target=self._run_lane,
                args=(lane,),
                name=f"driftline-webhooks-{lane.destination.name}",
                daemon=True,
            )
            lane.thread.start()

    def _load(self) -> None:
        """Schedule what the outbox holds from an earlier run (raises OutboxError)."""
        pending = self._outbox.load()
        with self._lock:
            now = self._clock()
            for n in pending:
                if n.id not in self._items:
                    self._schedule(_Pending(n, now))
            self._loaded = True
            self._cond.notify_all()
            for lane in self._lanes.values():
                lane.wake.notify_all()

    def _schedule(self, item: _Pending) -> None:
        """Queue ``item`` on its destination's lane; one for a destination that is not
        configured is dropped now (call with the lock held)."""
        n = item.notification
        lane = self._lanes.get(n.sink)
        if lane is None:
            log.warning("notification %s dropped: destination %s is not configured", n.id, n.sink)
            self._deliveries[n.sink, "dropped"] += 1
            self._unsaved.pop(n.id, None)
            self._outbox.remove(n.id)
            self._cond.notify_all()
            return
        self._items[n.id] = item
        heapq.heappush(lane.heap, (item.due, next(self._seq), n.id))
        lane.wake.notify_all()

    def submit(self, notification: Notification) -> bool:
        """Persist ``notification`` and return; ``False`` when it is dropped (and counted):
        the outbox is full or its destination is not configured. A notification whose id
        is pending already is not sent twice. Raises ``ValueError`` when its request
        carries credentials (its destination adds them when sending)."""
        with self._lock:
            if notification.id in self._items or notification.id in self._outbox:
                return True
            if notification.sink not in self._lanes:
                self._schedule(_Pending(notification, self._clock()))  # dropped
                return False
            if len(self._outbox) >= self._max_pending:
                log.error(
                    "outbox full (%d): notification %s dropped", len(self._outbox), notification.id
                )
                self._deliveries[notification.sink, "dropped"] += 1
                return False
            self._save(notification, 0)
            if not self._stopping:
                self._schedule(_Pending(notification, self._clock()))
            return True

    def _save(self, notification: Notification, failures: int) -> None:
        """Write ``notification`` to the outbox; on failure keep it in memory and schedule
        another write (call with the lock held)."""
        try:
            self._outbox.put(notification)
        except OutboxError as exc:
            self._write_errors += 1
            failures += 1
            delay = backoff_delay(failures, *self._backoff, lambda: 1.0)
            self._unsaved[notification.id] = (failures, self._clock() + delay)
            log.error(
                "%s; delivering it from memory, write retried in %.0fs (attempt %d)",
                exc,
                delay,
                failures,
            )
        else:
            self._unsaved.pop(notification.id, None)

    def _retry_writes(self, lane: _Lane) -> None:
        """Retry the outbox writes of ``lane``'s notifications that are due (call with the
        lock held)."""
        now = self._clock()
        for nid, (failures, due) in list(self._unsaved.items()):
            item = self._items.get(nid)
            if item is None:
                del self._unsaved[nid]  # delivered or abandoned meanwhile
            elif item.notification.sink == lane.destination.name and due <= now:
                self._save(item.notification, failures)

    def _next_wait(self, lane: _Lane) -> float | None:
        """Seconds until ``lane``'s next notification is due (<= 0: now); call with the lock
        held."""
        while lane.heap and lane.heap[0][2] not in self._items:
            heapq.heappop(lane.heap)  # delivered or abandoned meanwhile
        return lane.heap[0][0] - self._clock() if lane.heap else None

    def _wake_in(self, lane: _Lane) -> float | None:
        """Seconds until a delivery or an outbox write of ``lane`` is due (call with the
        lock held)."""
        due = [w] if (w := self._next_wait(lane)) is not None else []
        now = self._clock()
        name = lane.destination.name
        due += [
            d - now
            for nid, (_, d) in self._unsaved.items()
            if (item := self._items.get(nid)) is not None and item.notification.sink == name
        ]
        return min(due) if due else None

    def pump(self) -> float | None:
        """Attempt every notification due now, destination after destination; seconds
        until the next one is due after that, or ``None`` when nothing is pending."""
        waits = [w for lane in self._lanes.values() if (w := self._pump_lane(lane)) is not None]
        return min(waits) if waits else None

    def _pump_lane(self, lane: _Lane) -> float | None:
        """Attempt ``lane``'s notifications due now; seconds until its next one is due."""
        while True:
            with self._lock:
                if self._stopping and self._started:
                    return None
                if self._unsaved:
                    self._retry_writes(lane)
                wait = self._next_wait(lane)
                if wait is None or wait > 0:
                    return self._wake_in(lane)
                _, _, nid = heapq.heappop(lane.heap)
                item = self._items[nid]
                now = self._clock()
            outcome, delay = self._attempt(lane, item, now)
            with self._lock:
                # backoff and Retry-After count from the answer, not from the send
                self._settle(lane, item, outcome, delay, self._clock())
                self._cond.notify_all()

    def _attempt(self, lane: _Lane, item: _Pending, now: float) -> tuple[Outcome, float | None]:
        """Send once; the outcome and, for a retry, the server's Retry-After."""
        n = item.notification
        dest = lane.destination
        if n.sink in self._disabled:
            log.warning(
                "notification %s dropped: destination %s is disabled (410 Gone)", n.id, n.sink
            )
            return "dropped", None
        if now - n.created_at > self._max_age:
            log.error("notification %s to %s dropped: older than %gs", n.id, n.sink, self._max_age)
            return "dropped", None
        req = n.request
        try:
            headers = {**req.headers, **dest.headers(), "webhook-id": n.id}
        except CredentialsError as e:  # a token endpoint down or refusing: not sent
            log.warning("notification %s to %s: %s", n.id, n.sink, e)
            return "retry", None
        if dest.secret is not None:
            ts = datetime.fromtimestamp(int(now), UTC)
            headers["webhook-timestamp"] = str(int(now))
            headers["webhook-signature"] = Webhook(dest.secret).sign(n.id, ts, req.body)
        try:
            resp = bounded_http.send(
                lane.client,
                req.method,
                req.url,
                content=req.body.encode(),
                headers=headers,
                deadline=dest.timeout,
            )
        except httpx.TransportError as e:  # timeouts, the deadline and connection errors
            log.warning("notification %s to %s: %s: %s", n.id, n.sink, type(e).__name__, e)
            return "retry", None
        except httpx.HTTPError as e:
            log.error("notification %s to %s failed: %s", n.id, n.sink, e)
            return "failed", None
        status = resp.status_code
        if 200 <= status < 300:
            return "success", None
        if status == 410:
            log.error("destination %s answered 410 Gone: disabled until restart", n.sink)
            return "disabled", None
        if status >= 500 or status in _RETRY_STATUS:
            log.warning("notification %s to %s: HTTP %d", n.id, n.sink, status)
            return "retry", retry_after_seconds(resp.headers.get("retry-after"), now)
        log.error("notification %s to %s failed: HTTP %d %s", n.id, n.sink, status, resp.snippet())
        return "failed", None

    def _settle(
        self, lane: _Lane, item: _Pending, outcome: Outcome, retry_after: float | None, now: float
    ) -> None:
        n = item.notification
        if outcome == "retry":
            item.attempts += 1
            if item.attempts >= self._max_attempts:
                log.error(
                    "notification %s to %s failed after %d attempts", n.id, n.sink, item.attempts
                )
                outcome = "failed"
            else:
                delay = backoff_delay(item.attempts, *self._backoff, self._rand)
                if retry_after is not None:
                    delay = max(delay, min(retry_after, self._max_retry_after))
                item.due = now + delay
                self._deliveries[n.sink, "retry"] += 1
                heapq.heappush(lane.heap, (item.due, next(self._seq), n.id))
                return
        if outcome == "disabled":
            self._disabled.add(n.sink)
        if outcome == "success" and n.model is not None:
            self._retraining[n.model, n.target or ""] += 1
        self._deliveries[n.sink, outcome] += 1
        del self._items[n.id]
        self._unsaved.pop(n.id, None)
        self._outbox.remove(n.id)

    def _run_loader(self) -> None:
        failures = 0
        while True:
            try:
                self._load()
                return
            except OutboxError as exc:
                failures += 1
                delay = backoff_delay(failures, *self._backoff, lambda: 1.0)
                log.error("%s; retried in %.0fs", exc, delay)
                with self._lock:
                    if self._stopping:
                        return
                    self._cond.wait(timeout=delay)

    def _run_lane(self, lane: _Lane) -> None:
        with self._lock:
            while not self._loaded:
                if self._stopping:
                    return
                lane.wake.wait()
        while True:
            failed = False
            try:
                self._pump_lane(lane)
            except Exception:  # a bug must not end delivery for good
                log.exception("webhook delivery loop error (%s)", lane.destination.name)
                failed = True
            with self._lock:
                # decided under the lock, so a submit cannot slip in unnoticed
                wait = 1.0 if failed else self._wake_in(lane)
                if self._stopping:
                    return
                if wait is None or wait > 0:
                    lane.wake.wait(timeout=wait)

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing is pending (or ``timeout`` seconds); whether it emptied."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._items or not self._loaded:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(timeout=left)
            return True

    def pending(self) -> int:
        with self._lock:
            return len(self._items)

    def disabled(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._disabled)

    def delivery_counts(self) -> dict[tuple[str, str], int]:
        """Attempt outcomes per (sink, outcome), for ``driftline_webhook_deliveries_total``."""
        with self._lock:
            return dict(self._deliveries)

    def write_errors(self) -> int:
        """Outbox writes that failed (``driftline_outbox_write_errors_total``)."""
        with self._lock:
            return self._write_errors

    def retraining_counts(self) -> dict[tuple[str, str], int]:
        """Retraining requests delivered per (model, target), for
        ``driftline_retraining_requests_total``."""
        with self._lock:
            return dict(self._retraining)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the threads; what is not delivered stays in the outbox for the next start.
        A thread still sending is left to finish on its own (within its deadline)."""
        with self._lock:
            self._stopping = True
            self._cond.notify_all()
            for lane in self._lanes.values():
                lane.wake.notify_all()
            if self._unsaved:
                log.error(
                    "%d notifications never reached the outbox and are not delivered yet: "
                    "they are lost at this stop",
                    len(self._unsaved),
                )
        until = time.monotonic() + timeout
        if self._loader is not None:
            self._loader.join(max(0.0, until - time.monotonic()))
        for lane in self._lanes.values():
            if lane.thread is not None:
                lane.thread.join(max(0.0, until - time.monotonic()))
                if lane.thread.is_alive():
                    log.warning(
                        "webhook delivery to %s still sending after %gs",
                        lane.destination.name,
                        timeout,
                    )
                    continue
            lane.client.close()
