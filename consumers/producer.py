"""``PredictionLogger``: what a serving app uses to publish its predictions and labels.

The serving path must never wait for Kafka. Each ``log_*`` call encodes the event and
appends it to a bounded in-memory queue, and returns; one daemon thread moves the queue
into a :class:`kafka.KafkaProducer`. When the queue is full, or Kafka is unreachable for
long enough that it fills, new events are dropped and counted in :attr:`dropped` rather
than slowing the caller down. Even the producer's connection to Kafka is made by that
thread, so a broker that is down when the app starts delays nothing but the events.

    logger = PredictionLogger("kafka:9092")
    event_id = logger.log_prediction("fraud", {"amount": 12.5, "country": "FR"}, 0.87)
    ...
    logger.log_ground_truth(event_id, "fraud", "ok")  # when the outcome is known
    logger.close()
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import msgspec
import numpy as np
from kafka import KafkaProducer
from kafka.errors import KafkaTimeoutError

__all__ = ["DEFAULT_PRODUCER_CONFIG", "FeatureValue", "PredictionLogger", "format_timestamp"]

log = logging.getLogger("driftline.producer")

FeatureValue = float | int | str | bool | None

#: Producer settings of the logger; ``producer_config`` overrides any of them.
DEFAULT_PRODUCER_CONFIG: Mapping[str, Any] = {
    "acks": "all",
    "linger_ms": 20,
    "batch_size": 512 * 1024,
    # send() waits this long for topic metadata; it only ever blocks the sender thread.
    "max_block_ms": 10_000,
    # The connection is retried by the sender thread; each attempt gives up after this.
    "bootstrap_timeout_ms": 5_000,
}

_DRAIN_CHUNK = 1000  # events handed to the producer before checking for close again
_IDLE_WAIT_S = 0.05
_RETRY_MIN_S, _RETRY_MAX_S = 0.5, 10.0
_DROP_LOG_EVERY_S = 10.0

_Record = tuple[str, bytes, bytes]  # topic, key, value


class _Prediction(msgspec.Struct, kw_only=True, omit_defaults=True):
    event_id: str
    model: str
    model_version: str | None = None
    timestamp: str
    features: dict[str, Any]
    prediction: Any
    latency_ms: float | None = None
    tags: dict[str, str] | None = None


class _GroundTruth(msgspec.Struct, kw_only=True):
    event_id: str
    model: str
    label: Any
    timestamp: str


#: epoch seconds of year 5000: anything later is a timestamp in another unit
MAX_EPOCH_SECONDS = 95_617_584_000.0


def format_timestamp(value: float | datetime) -> str:
    """RFC 3339 in UTC with milliseconds and ``Z``; naive datetimes are taken as UTC.

    >>> format_timestamp(1_790_000_000.123)
    '2026-09-21T14:13:20.123Z'
    >>> format_timestamp(datetime(2026, 11, 27, 19, 0, 0, 123456))
    '2026-11-27T19:00:00.123Z'
    >>> format_timestamp(1_790_000_000_123)
    Traceback (most recent call last):
    ValueError: timestamp 1790000000123 is after year 5000: milliseconds? pass epoch seconds
    """
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%dT%H:%M:%S") + f".{value.microsecond // 1000:03d}Z"
    if not math.isfinite(value):
        raise ValueError(f"timestamp {value!r} is not finite")
    if value > MAX_EPOCH_SECONDS:
        raise ValueError(
            f"timestamp {value!r} is after year 5000: milliseconds? pass epoch seconds"
        )
    seconds, millis = divmod(round(value * 1000), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _has_nonfinite(features: Mapping[str, Any]) -> bool:
    return any(
        isinstance(v, float | np.floating) and not math.isfinite(v) for v in features.values()
    )


def _enc_hook(obj: Any) -> Any:
    # numpy scalars, the usual thing a serving app has at hand, become Python numbers.
    item = getattr(obj, "item", None)
    if callable(item):
        return item()
    raise NotImplementedError(f"cannot encode {type(obj).__name__} as JSON")


class PredictionLogger:
    """Publishes prediction and ground-truth events to Kafka without blocking the caller.

    Events are JSON as the README describes them, keyed by ``event_id``. Counters:
    :attr:`dropped` (queue full, or logged after :meth:`close`), :attr:`sent`
    (acknowledged by Kafka) and :attr:`failed` (rejected, timed out, or still queued when
    :meth:`close` gave up). Every accepted event ends up in ``sent`` or ``failed``.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        *,
        predictions_topic: str = "driftline.predictions",
        ground_truth_topic: str = "driftline.ground-truth",
        max_queue: int = 100_000,
        producer_config: Mapping[str, Any] | None = None,
    ) -> None:
        if max_queue < 1:
            raise ValueError(f"max_queue must be at least 1, got {max_queue}")
        config = {**DEFAULT_PRODUCER_CONFIG, **(producer_config or {})}
        unknown = sorted(set(config) - set(KafkaProducer.DEFAULT_CONFIG))
        if unknown:
            raise ValueError(f"unknown Kafka producer settings: {', '.join(unknown)}")
        config["bootstrap_servers"] = bootstrap_servers.split(",")
        self._config = config
        self._bootstrap_servers = bootstrap_servers
        self.predictions_topic = predictions_topic
        self.ground_truth_topic = ground_truth_topic
        self._max_queue = max_queue
        self._encoder = msgspec.json.Encoder(enc_hook=_enc_hook)

        self._queue: deque[_Record] = deque()
        self._lock = threading.Lock()  # guards the queue bound and the counters
        self._settled = threading.Condition(self._lock)
        self._wakeup = threading.Event()
        self._closing = threading.Event()
        self._closed = False
        self._accepted = 0
        self._handed = 0  # taken off the queue by the sender thread
        self._abandoned = 0  # cleared from the queue by close()
        self._dropped = 0
        self._sent = 0
        self._failed = 0
        self._last_drop_log = -_DROP_LOG_EVERY_S
        self._producer: KafkaProducer | None = None
        self._close_deadline = 0.0

        self._thread = threading.Thread(
            target=self._run, name="driftline-prediction-logger", daemon=True
        )
        self._thread.start()
        atexit.register(self.close)

    # -- counters ---------------------------------------------------------------------

    @property
    def dropped(self) -> int:
        """Events not queued: the queue was full, or the logger was closed."""
        return self._dropped

    @property
    def sent(self) -> int:
        """Events Kafka acknowledged."""
        return self._sent

    @property
    def failed(self) -> int:
        """Events accepted but not delivered (Kafka error, or abandoned at close)."""
        return self._failed

    @property
    def queued(self) -> int:
        """Events waiting for the sender thread."""
        return len(self._queue)

    # -- the serving path -------------------------------------------------------------

    def log_prediction(
        self,
        model: str,
        features: Mapping[str, FeatureValue],
        prediction: Any,
        *,
        event_id: str | None = None,
        model_version: str | None = None,
        timestamp: float | datetime | None = None,
        latency_ms: float | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> str:
        """Queue one prediction event and return its ``event_id`` (a new uuid4 if none).

        ``prediction`` is a number, a class (string or integer), ``{"label", "score"}``
        or ``{"probabilities": {...}}``. ``timestamp`` is epoch seconds or a datetime;
        ``None`` means now. Raises ``TypeError`` only for values JSON cannot hold.
        """
        if event_id is None:
            event_id = uuid.uuid4().hex
        event = _Prediction(
            event_id=event_id,
            model=model,
            model_version=model_version,
            timestamp=format_timestamp(time.time() if timestamp is None else timestamp),
            features=features if isinstance(features, dict) else dict(features),
            prediction=prediction,
            latency_ms=latency_ms,
            tags=tags if tags is None or isinstance(tags, dict) else dict(tags),
        )
        if _has_nonfinite(event.features):
            # JSON has no NaN or infinity: msgspec would write null (a missing value); the
            # NaN/Infinity literals that driftline's decoder reads keep them non-finite
            builtins = msgspec.to_builtins(event, enc_hook=_enc_hook)
            value = json.dumps(builtins, separators=(",", ":"), allow_nan=True).encode()
        else:
            value = self._encoder.encode(event)
        self._put(self.predictions_topic, event_id, value)
        return event_id

    def log_ground_truth(
        self,
        event_id: str,
        model: str,
        label: Any,
        *,
        timestamp: float | datetime | None = None,
    ) -> None:
        """Queue the real outcome ``label`` of the prediction ``event_id``."""
        event = _GroundTruth(
            event_id=event_id,
            model=model,
            label=label,
            timestamp=format_timestamp(time.time() if timestamp is None else timestamp),
        )
        self._put(self.ground_truth_topic, event_id, self._encoder.encode(event))

    def _put(self, topic: str, event_id: str, value: bytes) -> None:
        with self._lock:
            if self._closed or len(self._queue) >= self._max_queue:
                self._dropped += 1
                self._log_drop()
                return
            self._queue.append((topic, event_id.encode(), value))
            self._accepted += 1
        if not self._wakeup.is_set():
            self._wakeup.set()

    def _log_drop(self) -> None:
        now = time.monotonic()
        if now - self._last_drop_log >= _DROP_LOG_EVERY_S:
            self._last_drop_log = now
            why = "the logger is closed" if self._closed else f"queue full ({self._max_queue})"
            log.warning("dropping prediction events: %s; %d dropped so far", why, self._dropped)

    # -- flush and close --------------------------------------------------------------

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event logged so far is acknowledged or has failed.

        Returns ``False`` if ``timeout`` seconds passed first. With no timeout and Kafka
        unreachable, it waits for Kafka; the serving path should pass one.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            target = self._accepted
        self._wakeup.set()
        if not self._wait_for(lambda: self._handed + self._abandoned >= target, deadline):
            return False
        producer = self._producer
        if producer is not None and self._sent + self._failed < target:
            try:
                producer.flush(timeout=None if deadline is None else _left(deadline))
            except KafkaTimeoutError:
                return False
        return self._wait_for(lambda: self._sent + self._failed >= target, deadline)

    def _wait_for(self, done: Callable[[], bool], deadline: float | None) -> bool:
        with self._settled:
            while not done():
                if deadline is not None and _left(deadline) <= 0:
                    return False
                # A short wait: the sender thread hands events over without notifying.
                self._settled.wait(0.05 if deadline is None else min(_left(deadline), 0.05))
        return True

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (for up to ``timeout`` seconds), then stop.

        Events still undelivered when ``timeout`` expires are counted in :attr:`failed`.
        Later ``log_*`` calls are dropped. Idempotent; also run at interpreter exit.
        """
        atexit.unregister(self.close)
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._close_deadline = time.monotonic() + timeout
        self._closing.set()
        self._wakeup.set()
        self._thread.join(timeout)
        with self._lock:
            abandoned = len(self._queue)
            self._queue.clear()
            self._abandoned += abandoned
            self._failed += abandoned
            self._settled.notify_all()
        if abandoned or self._thread.is_alive():
            log.warning(
                "prediction logger closed after %gs with %d events undelivered",
                timeout,
                abandoned + self._accepted - self._sent - self._failed,
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"PredictionLogger({self._bootstrap_servers!r}, queued={self.queued}, "
            f"sent={self._sent}, failed={self._failed}, dropped={self._dropped})"
        )

    # -- the sender thread ------------------------------------------------------------

    def _run(self) -> None:
        producer = self._connect()
        if producer is None:
            return  # closed before Kafka was reachable; close() accounts for the queue
        self._producer = producer
        try:
            while not (self._closing.is_set() and (not self._queue or self._past_close())):
                self._wakeup.wait(_IDLE_WAIT_S)
                self._wakeup.clear()
                self._drain(producer)
        finally:
            try:
                producer.flush(timeout=_left(self._close_deadline))
            except KafkaTimeoutError:
                log.warning("prediction logger: events still in flight at close")
            producer.close(timeout=_left(self._close_deadline))

    def _past_close(self) -> bool:
        return time.monotonic() >= self._close_deadline

    def _connect(self) -> KafkaProducer | None:
        """A producer connected to Kafka, retrying with backoff until it is closed."""
        delay = _RETRY_MIN_S
        while not self._closing.is_set():
            try:
                return KafkaProducer(**self._config)
            except Exception as exc:
                log.warning(
                    "prediction logger cannot reach Kafka at %s (%s); retrying in %gs",
                    self._bootstrap_servers,
                    exc,
                    delay,
                )
            self._closing.wait(delay)
            delay = min(delay * 2, _RETRY_MAX_S)
        return None

    def _drain(self, producer: KafkaProducer) -> None:
        queue = self._queue
        while queue and not (self._closing.is_set() and self._past_close()):
            for _ in range(min(len(queue), _DRAIN_CHUNK)):
                try:
                    topic, key, value = queue.popleft()
                except IndexError:  # close() cleared the queue meanwhile
                    return
                self._handed += 1
                try:
                    future = producer.send(topic, value=value, key=key)
                except Exception as exc:
                    self._on_error(exc)
                    continue
                future.add_callback(self._on_sent)
                future.add_errback(self._on_error)

    def _on_sent(self, metadata: Any) -> None:
        with self._lock:
            self._sent += 1
            self._settled.notify_all()

    def _on_error(self, exc: BaseException) -> None:
        with self._lock:
            self._failed += 1
            self._settled.notify_all()
        if self._failed == 1 or self._failed % 1000 == 0:
            log.warning("prediction event not delivered (%d so far): %s", self._failed, exc)
