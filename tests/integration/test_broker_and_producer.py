"""The embedded broker and the serving app's PredictionLogger, against a real broker."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient

from consumers.broker import EmbeddedBroker
from consumers.exceptions import BrokerError, ConsumersError
from consumers.producer import PredictionLogger

pytestmark = pytest.mark.integration

T0 = 1_790_000_000.0
MODELS = ["fraud", "churn", "price"]
PREDICTION_FIELDS = [
    "event_id",
    "model",
    "model_version",
    "timestamp",
    "features",
    "prediction",
    "latency_ms",
    "tags",
]
RFC3339_MS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def rfc3339(ts: float | datetime) -> str:
    """The expected wire timestamp, computed independently of the logger."""
    if isinstance(ts, float):
        ts = datetime.fromtimestamp(ts, UTC)
    elif ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def canonical(value: Any) -> str:
    # Unlike ==, tells true from 1 and 1.0 from 1.
    return json.dumps(value, sort_keys=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def nothing_listens(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def random_prediction(rng: random.Random) -> Any:
    kind = rng.randrange(5)
    if kind == 0:
        return rng.random()
    if kind == 1:
        return rng.choice(["fraud", "ok"])
    if kind == 2:
        return rng.randrange(3)
    if kind == 3:
        return {"label": rng.choice(["fraud", "ok"]), "score": rng.random()}
    p = rng.random()
    return {"probabilities": {"fraud": p, "ok": 1.0 - p}}


def random_features(rng: random.Random) -> dict[str, Any]:
    return {
        "amount": rng.lognormvariate(3.0, 1.0),
        "count": rng.randrange(-5, 1000),
        "country": rng.choice(["FR", "DE", "US", "été", ""]),
        "is_new": rng.random() < 0.5,
        "age": None if rng.random() < 0.2 else rng.randrange(18, 90),
        "missing": None,
    }


def consume_all(
    bootstrap: str, topics: list[str], group: str, config: dict[str, Any], expected: int
) -> list[Any]:
    consumer = KafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **config,
    )
    records: list[Any] = []
    try:
        deadline = time.monotonic() + 60
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
        # One more poll: anything beyond `expected` would be a duplicate or a stray.
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    finally:
        consumer.close()
    return records


def test_prediction_logger_round_trips_every_event_exactly(
    kafka_bootstrap, make_topic, make_group, consumer_config
):
    rng = random.Random(20261127)
    predictions_topic, ground_truth_topic = make_topic(partitions=3), make_topic()
    expected: dict[str, dict[str, Any]] = {}
    expected_gt: dict[str, dict[str, Any]] = {}
    now_ids: set[str] = set()
    before = datetime.now(UTC) - timedelta(seconds=1)
    with PredictionLogger(
        kafka_bootstrap,
        predictions_topic=predictions_topic,
        ground_truth_topic=ground_truth_topic,
    ) as logger:
        for i in range(2000):
            model = MODELS[i % len(MODELS)]
            features = random_features(rng)
            prediction = random_prediction(rng)
            ts_kind = i % 4
            ts: float | datetime | None
            if ts_kind == 0:
                ts = T0 + i * 0.001
            elif ts_kind == 1:
                ts = datetime(2026, 11, 27, 19, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
            elif ts_kind == 2:
                ts = datetime(2026, 11, 27, 19, 0, 0, 999999) + timedelta(seconds=i)
            else:
                ts = None
            kwargs: dict[str, Any] = {}
            if i % 2:
                kwargs["model_version"] = f"2026-11-0{i % 3 + 1}"
            if i % 3:
                kwargs["latency_ms"] = round(rng.uniform(0.1, 50.0), 3)
            if i % 5 == 0:
                kwargs["tags"] = {"region": rng.choice(["eu", "us"]), "canary": "no"}
            if i % 7 == 0:
                kwargs["event_id"] = f"given-{i}"
            event_id = logger.log_prediction(model, features, prediction, timestamp=ts, **kwargs)
            if i % 7 == 0:
                assert event_id == f"given-{i}"
            event = {"event_id": event_id, "model": model, **kwargs}
            event.update(features=features, prediction=prediction)
            if ts is None:
                now_ids.add(event_id)
            else:
                event["timestamp"] = rfc3339(ts)
            expected[event_id] = event
        for event_id in rng.sample(sorted(expected), 500):
            label = rng.choice(["fraud", "ok", 1, 0.5])
            gt_ts = T0 + rng.randrange(10**6) / 1000
            logger.log_ground_truth(event_id, expected[event_id]["model"], label, timestamp=gt_ts)
            expected_gt[event_id] = {
                "event_id": event_id,
                "model": expected[event_id]["model"],
                "label": label,
                "timestamp": rfc3339(gt_ts),
            }
    after = datetime.now(UTC) + timedelta(seconds=1)
    assert (logger.sent, logger.dropped, logger.failed) == (2500, 0, 0)

    records = consume_all(
        kafka_bootstrap,
        [predictions_topic, ground_truth_topic],
        make_group(),
        consumer_config(),
        2500,
    )
    predictions = [r for r in records if r.topic == predictions_topic]
    ground_truths = [r for r in records if r.topic == ground_truth_topic]
    assert (len(predictions), len(ground_truths)) == (2000, 500)

    seen: set[str] = set()
    for record in predictions:
        decoded = json.loads(record.value.decode("utf-8"))
        event_id = decoded["event_id"]
        assert record.key == event_id.encode("utf-8")
        assert event_id not in seen
        seen.add(event_id)
        want = dict(expected[event_id])
        if event_id in now_ids:
            stamp = decoded["timestamp"]
            assert RFC3339_MS_Z.match(stamp), stamp
            assert before <= datetime.fromisoformat(stamp) <= after
            want["timestamp"] = stamp
        assert decoded == want
        assert canonical(decoded) == canonical(want)
        # The fields come in the documented order; optional ones are absent, never null.
        assert list(decoded) == [f for f in PREDICTION_FIELDS if f in want]
    assert seen == set(expected)

    seen_gt = set()
    for record in ground_truths:
        decoded = json.loads(record.value.decode("utf-8"))
        assert record.key == decoded["event_id"].encode("utf-8")
        assert canonical(decoded) == canonical(expected_gt[decoded["event_id"]])
        assert list(decoded) == ["event_id", "model", "label", "timestamp"]
        seen_gt.add(decoded["event_id"])
    assert seen_gt == set(expected_gt)
    # A given timestamp keeps its milliseconds and is written in UTC.
    assert expected["given-0"]["timestamp"] == "2026-09-21T14:13:20.000Z"
    assert rfc3339(
        datetime(2026, 11, 27, 19, 0, 0, 123456, tzinfo=timezone(timedelta(hours=2)))
    ) == ("2026-11-27T17:00:00.123Z")


def test_prediction_logger_never_blocks_when_kafka_is_unreachable():
    port = free_port()  # bound, then released: nothing listens there
    logger = PredictionLogger(f"127.0.0.1:{port}", max_queue=10)
    start = time.monotonic()
    ids = [logger.log_prediction("fraud", {"amount": 1.0}, 0.5) for _ in range(1000)]
    logging_s = time.monotonic() - start
    assert len(set(ids)) == 1000
    # The queue holds 10 events; nothing drains it while Kafka is away.
    assert logger.dropped == 990
    assert logger.queued == 10
    assert logger.flush(timeout=0.2) is False

    start = time.monotonic()
    logger.close(timeout=1)
    close_s = time.monotonic() - start
    assert close_s < 5, close_s  # bounded by its timeout, not by Kafka's retries
    assert (logger.sent, logger.failed) == (0, 10)  # abandoned at close, not lost silently
    logger.log_prediction("fraud", {"amount": 1.0}, 0.5)
    assert logger.dropped == 991  # after close, events are dropped and counted
    # Loose on purpose: a call that waited for Kafka would take seconds, not microseconds.
    assert logging_s < 5, logging_s


def test_prediction_logger_rejects_unknown_producer_settings():
    with pytest.raises(ValueError, match="lingerms"):
        PredictionLogger("127.0.0.1:9", producer_config={"lingerms": 5})


def test_embedded_broker_starts_and_stops_on_a_free_port():
    port = free_port()
    broker = EmbeddedBroker(port=port).start()
    pid = broker.pid
    try:
        assert pid is not None
        assert pid_alive(pid)
        assert broker.bootstrap_servers == f"127.0.0.1:{port}"
        broker.create_topics(["alpha", "beta", "alpha"], partitions=2)
        broker.create_topics(["alpha"])  # already there: no error
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
        try:
            assert {"alpha", "beta"} <= set(admin.list_topics())
        finally:
            admin.close()
    finally:
        broker.stop()
    assert broker.pid is None
    assert not pid_alive(pid)
    assert nothing_listens(port)
    broker.stop()  # idempotent
    # The port is free again: a new broker binds it.
    with EmbeddedBroker(port=port) as again:
        assert again.bootstrap_servers == f"127.0.0.1:{port}"
        assert again.pid not in (None, pid)


def test_embedded_broker_errors_are_clear():
    with pytest.raises(BrokerError, match="not an executable") as missing:
        EmbeddedBroker(binary="/nonexistent/tansu").start()
    assert isinstance(missing.value, ConsumersError)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BrokerError, match=f"port {port} .* already in use"):
            EmbeddedBroker(port=port).start(timeout=10)


def test_run_broker_serves_until_sigterm():
    port = free_port()
    code = (
        "from consumers.broker import run_broker; "
        f"raise SystemExit(run_broker({port}, '127.0.0.1'))"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        assert line == f"driftline broker listening on 127.0.0.1:{port} (Tansu, memory-only)\n"
        admin = KafkaAdminClient(bootstrap_servers=f"127.0.0.1:{port}")
        admin.list_topics()
        admin.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert nothing_listens(port)


def test_prediction_logger_keeps_nan_and_infinity_non_finite(
    kafka_bootstrap, make_topic, make_group, consumer_config
):
    """NaN and infinity go out as the literals the decoder reads, so the service counts
    them as non-finite values, not as missing ones (JSON's null)."""
    from consumers.decoding import BatchDecoder
    from monitor.events import NONFINITE
    from monitor.schema import FeatureKind, FeatureSpec

    topic = make_topic()
    sent = [float("nan"), float("inf"), float("-inf"), 1.5, None]
    with PredictionLogger(kafka_bootstrap, predictions_topic=topic) as logger:
        for v in sent:
            logger.log_prediction("m", {"x": v, "c": "a"}, 0.5, timestamp=T0)
    records = consume_all(kafka_bootstrap, [topic], make_group(), consumer_config(), len(sent))
    values = [r.value for r in sorted(records, key=lambda r: r.offset)]
    decoder = BatchDecoder(
        {"m": [FeatureSpec("x", FeatureKind.NUMERICAL), FeatureSpec("c", FeatureKind.CATEGORICAL)]}
    )
    batch = decoder.decode(values, [T0] * len(values)).batches["m"]
    assert (batch.flags["x"] == NONFINITE).tolist() == [True, True, True, False, False]
    assert batch.numerical["x"][3] == 1.5
    assert b"NaN" in values[0]
    assert b"Infinity" in values[1]
    assert b"-Infinity" in values[2]
