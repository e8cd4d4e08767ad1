"""Bad input on a real broker: every record ends valid or dead-lettered, with its reason."""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient
from prometheus_client import generate_latest

from consumers.decoding import Reason
from consumers.http import HttpServer
from consumers.loop import HEADER_PREFIX, ConsumerLoop
from consumers.service import Service
from monitor.config import DriftlineConfig

pytestmark = pytest.mark.integration

MAX_BYTES = 64 * 1024


def reference(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path / "ref.csv"
    rows = ["amount,country"] + [
        f"{a},{c}"
        for a, c in zip(rng.normal(50, 10, 2000), rng.choice(["FR", "DE"], 2000), strict=True)
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


def make_service(
    tmp_path, bootstrap, topic, dlq, group, consumer_config, producer=None, client="kafka-python"
):
    config = DriftlineConfig.model_validate(
        {
            "kafka": {
                "bootstrap_servers": bootstrap,
                "client": client,
                "group_id": group,
                "predictions_topic": topic,
                "dead_letter_topic": dlq,
                "consumer": consumer_config(),
                "producer": producer or {},
                "poll_timeout_ms": 200,
            },
            "validation": {"max_record_bytes": MAX_BYTES, "max_future": "1h", "max_age": "7d"},
            "windows": {"pane": "10s", "size": "60s", "allowed_lateness": "0s"},
            "models": [{"name": "fraud", "reference": {"path": str(reference(tmp_path))}}],
        }
    )
    service = Service(config)
    stop = threading.Event()
    loop = ConsumerLoop(service, config.kafka)
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    return service, stop, thread


def valid_event(i: int, now: float, **features):
    return {
        "event_id": f"ok-{i}",
        "model": "fraud",
        "timestamp": now,
        "features": features or {"amount": 50.0 + i % 7, "country": "FR"},
        "prediction": 0.5,
    }


def enc(obj) -> bytes:
    return json.dumps(obj).encode()


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)


def kinds(now: float):
    """(strategy of record values, set of reasons a record of that kind may get)."""
    # Below the parser's recursion limit a deep document is well-formed but useless;
    # above it, it is not parseable: either way it is dead-lettered, never a crash.
    deep = st.integers(200, 5000).flatmap(
        lambda d: st.sampled_from([b"[" * d + b"]" * d, b'{"a":' * d + b"1" + b"}" * d])
    )
    return {
        "random bytes": (
            st.binary(min_size=0, max_size=60),
            {
                Reason.EMPTY,
                Reason.NOT_UTF8,
                Reason.INVALID_JSON,
                Reason.NOT_AN_OBJECT,
                Reason.INVALID_FIELD,
            },
        ),
        "truncated JSON": (
            st.integers(1, 40).map(lambda k: enc(valid_event(0, now))[:-k]),
            {Reason.INVALID_JSON},
        ),
        "wrong types": (
            st.sampled_from(
                ["event_id", "timestamp", "features", "latency_ms", "prediction"]
            ).flatmap(
                lambda key: st.sampled_from([[1], {"x": [1]}, True]).map(
                    lambda bad: enc({**valid_event(0, now), key: bad})
                )
            ),
            {Reason.INVALID_FIELD},
        ),
        "huge strings": (
            st.integers(MAX_BYTES, 3 * MAX_BYTES).map(
                lambda n: enc({**valid_event(0, now), "event_id": "x" * n})
            ),
            {Reason.OVERSIZE},
        ),
        "deep nesting": (deep, {Reason.INVALID_JSON, Reason.NOT_AN_OBJECT, Reason.INVALID_FIELD}),
        "unknown models": (
            st.text(min_size=1, max_size=20)
            .filter(lambda m: m != "fraud")
            .map(lambda m: enc({**valid_event(0, now), "model": m})),
            {Reason.UNKNOWN_MODEL},
        ),
        "timestamps 1970 and 3000": (
            st.sampled_from(["1970-01-01T00:00:00Z", "3000-01-01T00:00:00Z", 0, 32503680000]).map(
                lambda t: enc({**valid_event(0, now), "timestamp": t})
            ),
            {Reason.TIMESTAMP_OUT_OF_RANGE},
        ),
        "not objects": (
            json_scalars.map(lambda v: json.dumps(v).encode()) | st.just(b"[1,2]"),
            {Reason.NOT_AN_OBJECT},
        ),
    }


# NaN/inf and wrong-typed *feature values* are valid events with quality flags, not dead letters.
def quality_problems(now: float) -> list[bytes]:
    return [
        b'{"event_id":"q1","model":"fraud","timestamp":%d,"features":{"amount":NaN,"country":"FR"}}'
        % now,
        b'{"event_id":"q2","model":"fraud","timestamp":%d,"features":{"amount":Infinity}}' % now,
        enc(valid_event(3, now, amount="fifty", country=7)),
        enc(valid_event(4, now, amount=None)),
    ]


@settings(
    max_examples=1,
    deadline=None,
    phases=[Phase.generate],
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
def test_fuzzed_records_are_all_accounted_for(
    data, tmp_path_factory, kafka_bootstrap, make_topic, make_group, consumer_config, kafka_client
):
    tmp_path = tmp_path_factory.mktemp("fuzz")
    now = time.time()
    records: list[tuple[bytes | None, set[str] | None]] = []
    for name, (strategy, reasons) in kinds(now).items():
        for value in data.draw(st.lists(strategy, min_size=5, max_size=25), label=name):
            records.append((value, reasons))
    records += [(v, None) for v in quality_problems(now)]
    records += [(enc(valid_event(i, now)), None) for i in range(300)]
    order = data.draw(st.permutations(range(len(records))), label="order")
    records = [records[i] for i in order]

    topic, dlq = make_topic(), make_topic()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, max_request_size=8 * MAX_BYTES)
    for i, (value, _) in enumerate(records):
        producer.send(topic, key=str(i).encode(), value=value)
    producer.flush()
    producer.close()

    service, stop, thread = make_service(
        tmp_path, kafka_bootstrap, topic, dlq, make_group(), consumer_config, client=kafka_client
    )
    http = HttpServer("127.0.0.1", 0, service.registry, service)
    http.start()
    try:
        expected_invalid = sum(1 for _, reasons in records if reasons is not None)
        expected_valid = len(records) - expected_invalid
        deadline = time.time() + 60
        while time.time() < deadline:
            snap = service.snapshot()
            if snap.counters["fraud"].predictions + sum(snap.invalid.values()) >= len(records):
                break
            time.sleep(0.2)
        snap = service.snapshot()
        assert snap.counters["fraud"].predictions == expected_valid
        assert sum(snap.invalid.values()) == expected_invalid
        assert thread.is_alive()
        with urllib.request.urlopen(f"http://127.0.0.1:{http.port}/readyz", timeout=5) as r:
            assert r.status == 200

        # every dead letter is the original record, with the right reason in its headers
        consumer = KafkaConsumer(
            dlq,
            bootstrap_servers=kafka_bootstrap,
            auto_offset_reset="earliest",
            consumer_timeout_ms=5000,
            max_partition_fetch_bytes=16 * MAX_BYTES,
            fetch_max_bytes=64 * MAX_BYTES,
        )
        letters = list(consumer)
        consumer.close()
        assert len(letters) == expected_invalid
        by_offset = {}
        for letter in letters:
            headers = {k: v.decode() for k, v in letter.headers}
            assert headers[HEADER_PREFIX + "topic"] == topic
            by_offset[int(headers[HEADER_PREFIX + "offset"])] = (letter, headers)
        reasons = Counter()
        for offset, (value, allowed) in enumerate(records):
            if allowed is None:
                assert offset not in by_offset
                continue
            letter, headers = by_offset[offset]
            assert letter.value == (value or None) or letter.value == value
            reason = headers["driftline.reason"]
            assert reason in allowed, (value[:80] if value else value, reason)
            assert headers[HEADER_PREFIX + "exception.message"]
            reasons[reason] += 1
        # the metric by reason equals the dead letters by reason
        exported = Counter()
        for (_, reason), n in snap.invalid.items():
            exported[reason] += n
        assert exported == reasons
        # quality problems were counted as such, not dropped
        ev = service.evaluation("fraud")
        assert ev is None or ev.window_events <= expected_valid
    finally:
        stop.set()
        thread.join(15)
        http.stop()


def test_unwritable_dead_letter_topic_blocks_the_commit(
    tmp_path, kafka_bootstrap, make_topic, make_group, consumer_config, kafka_client
):
    now = time.time()
    topic, dlq, group = make_topic(), make_topic(), make_group()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for i in range(10):
        producer.send(topic, enc(valid_event(i, now)))
    producer.send(topic, b"not json " + b"x" * 2000)
    producer.flush()
    producer.close()

    # a dead-letter producer that cannot send this record (it is over its request size;
    # 1000 bytes is librdkafka's least)
    service, stop, thread = make_service(
        tmp_path,
        kafka_bootstrap,
        topic,
        dlq,
        group,
        consumer_config,
        {"max_request_size": 1000},
        client=kafka_client,
    )
    time.sleep(8)
    assert thread.is_alive()
    assert service.events_counted("fraud") == 0  # nothing of the batch is counted...
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    committed = admin.list_group_offsets(group).get(group, {})
    assert all(meta.offset <= 0 for meta in committed.values())  # ...or committed
    stop.set()
    thread.join(15)
    assert not thread.is_alive()

    # with a working dead-letter topic, the same group resumes and accounts for all 11
    service, stop, thread = make_service(
        tmp_path, kafka_bootstrap, topic, dlq, group, consumer_config, client=kafka_client
    )
    try:
        deadline = time.time() + 30
        while time.time() < deadline and sum(service.snapshot().invalid.values()) < 1:
            time.sleep(0.2)
        assert service.events_counted("fraud") == 10
        assert service.snapshot().invalid == {("unknown", Reason.INVALID_JSON): 1}
    finally:
        stop.set()
        thread.join(15)
    # offsets are committed at the latest when the loop stops
    committed = admin.list_group_offsets(group).get(group, {})
    admin.close()
    assert sum(meta.offset for meta in committed.values()) == 11


def test_six_hundred_dead_letters_log_a_few_lines_and_count_all(
    tmp_path, kafka_bootstrap, make_topic, make_group, consumer_config, caplog
):
    topic, dlq = make_topic(), make_topic()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=10)
    for i in range(300):
        producer.send(topic, value=b"{not json")
        producer.send(topic, value=enc({**valid_event(i, time.time()), "model": "nobody"}))
    producer.flush()
    producer.close()
    caplog.set_level(logging.WARNING, logger="driftline.consumer")
    service, stop, thread = make_service(
        tmp_path, kafka_bootstrap, topic, dlq, make_group(), consumer_config
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline and sum(service.snapshot().invalid.values()) < 600:
            time.sleep(0.2)
        invalid = service.snapshot().invalid  # counted per partition: read before it goes
    finally:
        stop.set()
        thread.join(15)  # the loop sums up what it held back when it stops
    assert sum(invalid.values()) == 600, invalid
    lines = [r for r in caplog.records if r.getMessage().startswith("dead-lettered")]
    # one line at once per (model, reason), one summary of the rest with a sample record
    assert 2 <= len(lines) <= 4, [r.getMessage() for r in lines]
    summed = sum(getattr(r, "count", 1) for r in lines)
    assert summed == 600
    assert {r.reason for r in lines} == {Reason.INVALID_JSON, Reason.UNKNOWN_MODEL}
    assert all(isinstance(r.offset, int) for r in lines)


def test_sizes_are_bounded_by_length_not_only_by_count(
    tmp_path, kafka_bootstrap, make_topic, make_group, consumer_config
):
    """Long feature names, long event ids and events with thousands of keys cannot grow
    /metrics or the state: refused or counted under one bounded label value."""
    topic, dlq = make_topic(), make_topic()
    now = time.time()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=10)
    for i in range(60):  # a 30 KB unexpected feature name, different each time
        features = {"amount": 50.0, "country": "FR", f"{i}{'x' * 30_000}": 1}
        producer.send(topic, value=enc(valid_event(i, now, **features)))
    for i in range(20):  # event ids of 30 KB (the records stay under max_record_bytes)
        producer.send(topic, value=enc({**valid_event(100 + i, now), "event_id": "e" * 30_000}))
    wide = {f"k{j}": j for j in range(3000)}
    producer.send(topic, value=enc(valid_event(200, now, amount=1.0, country="FR", **wide)))
    producer.flush()
    producer.close()
    service, stop, thread = make_service(
        tmp_path, kafka_bootstrap, topic, dlq, make_group(), consumer_config
    )
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            snap = service.snapshot()
            if snap.counters["fraud"].predictions + sum(snap.invalid.values()) >= 81:
                break
            time.sleep(0.2)
        snap = service.snapshot()
        text = generate_latest(service.registry).decode()
    finally:
        stop.set()
        thread.join(15)
    assert snap.counters["fraud"].predictions == 60
    assert snap.invalid == {("fraud", Reason.INVALID_FIELD): 21}
    assert len(text) < 100_000, len(text)  # was 1.8 MB: one 30 KB label value per name
    assert max(len(line) for line in text.splitlines()) < 1000
    assert 'feature="__other__"' in text
