"""State and event time you can trust, on a real broker: each scenario once lost or
double-counted events, or blinded a model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kafka import KafkaProducer
from test_fault_tolerance import (
    PANE,
    PARTITIONS,
    SIZE,
    expected_window,
    free_port,
    produce,
    scrape,
    start,
    wait_for,
    write_reference,
)

from alerts.formats import rfc3339
from consumers.broker import EmbeddedBroker
from consumers.checkpoints import DirectoryStore
from consumers.loop import ConsumerLoop
from consumers.service import Service
from consumers.topics import topic_partitions
from monitor.config import DriftlineConfig

pytestmark = pytest.mark.integration


def make_config(
    kafka_bootstrap: str,
    topic: str,
    group: str,
    ref: Path,
    consumer: dict,
    top: dict[str, Any] | None = None,
    **model: Any,
) -> DriftlineConfig:
    return DriftlineConfig.model_validate(
        {
            "kafka": {
                "bootstrap_servers": kafka_bootstrap,
                "group_id": group,
                "predictions_topic": topic,
                "ground_truth_topic": topic + ".gt",
                "panes_topic": topic + ".panes",
                "dead_letter_topic": topic + ".dlq",
                "consumer": consumer,
                "poll_timeout_ms": 200,
                "max_batch": 1000,
            },
            "windows": {"pane": f"{PANE:g}s", "size": f"{SIZE:g}s", "allowed_lateness": "5s"},
            "models": [{"name": "m", "reference": {"path": str(ref)}, **model}],
            **(top or {}),
        }
    )


class Instance:
    """A service and its consumer loop on a thread, with a directory store."""

    def __init__(self, config: DriftlineConfig, store: Path, outbox: Path | None = None) -> None:
        self.service = Service(config)
        if outbox is not None:
            self.service.enable_alerting(outbox, time.time())
        self.stop = threading.Event()
        self.loop = ConsumerLoop(
            self.service, config.kafka, store=DirectoryStore(store), checkpoint_interval=0.3
        )
        self.thread = threading.Thread(target=self.loop.run, args=(self.stop,), daemon=True)
        self.thread.start()

    def wait_counted(self, n: int, timeout: float = 60.0) -> int:
        deadline = time.time() + timeout
        while time.time() < deadline and self.service.events_counted("m") < n:
            time.sleep(0.1)
        time.sleep(0.5)  # anything counted twice would show now
        return self.service.events_counted("m")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        if self.service.alerting is not None:
            self.service.alerting.close()


def checkpoints(store: Path) -> dict[int, list[Path]]:
    out = {}
    for p in range(PARTITIONS):
        files = sorted(store.rglob(f"partition-{p}/checkpoint-*.bin"))
        out[p] = files
    return out


@pytest.fixture
def setup(tmp_path, kafka_bootstrap, make_topic, make_group, consumer_config):
    ref = tmp_path / "ref.csv"
    write_reference(ref)
    topic = make_topic(partitions=PARTITIONS)
    t0 = float(int(time.time()) // 100 * 100 - 1000)
    group = make_group()
    return ref, topic, group, t0, consumer_config()


def test_newest_checkpoint_truncated_bit_flipped_or_empty_falls_back_to_an_older_one(
    tmp_path, kafka_bootstrap, setup
):
    ref, topic, group, t0, consumer = setup
    config = make_config(kafka_bootstrap, topic, group, ref, consumer)
    store = tmp_path / "state"
    sent = produce(kafka_bootstrap, topic, 0, 6_000, t0)
    a = Instance(config, store)
    try:
        assert a.wait_counted(6_000) == 6_000
        time.sleep(1.0)  # a few more checkpoints of the same state
        sent += produce(kafka_bootstrap, topic, 6_000, 4_000, t0)
        assert a.wait_counted(10_000) == 10_000
    finally:
        a.close()
    files = checkpoints(store)
    assert all(len(f) >= 2 for f in files.values()), files
    # break the newest checkpoint of each partition, three ways
    newest = [files[p][-1] for p in range(PARTITIONS)]
    newest[0].write_bytes(newest[0].read_bytes()[:100])  # truncated
    flipped = bytearray(newest[1].read_bytes())
    flipped[len(flipped) // 2] ^= 0x40
    newest[1].write_bytes(bytes(flipped))  # one bit flipped
    newest[2].write_bytes(b"")  # empty
    stale = newest[0].parent / ".checkpoint-000000000099.bin.1234.tmp"
    stale.write_bytes(b"half a write")
    b = Instance(config, store)
    try:
        assert b.wait_counted(10_000) == 10_000  # exactly: nothing lost, nothing twice
        assert b.service.restore_outcomes["restored_older"] == PARTITIONS
        assert not stale.exists()
        want = expected_window(sent)
        deadline = time.time() + 20
        ev = None
        while time.time() < deadline:
            b.service.evaluate_all(time.time())
            ev = b.service.evaluation("m")
            if ev is not None and ev.window_events == want:
                break
            time.sleep(0.2)
        assert ev is not None
        assert ev.window_events == want
    finally:
        b.close()


def test_restart_after_changing_the_binning_keeps_every_count(tmp_path, kafka_bootstrap, setup):
    ref, topic, group, t0, consumer = setup
    store = tmp_path / "state"
    sent = produce(kafka_bootstrap, topic, 0, 10_000, t0)
    a = Instance(make_config(kafka_bootstrap, topic, group, ref, consumer), store)
    try:
        assert a.wait_counted(10_000) == 10_000
    finally:
        a.close()
    changed = make_config(kafka_bootstrap, topic, group, ref, consumer, binning={"quantiles": 20})
    b = Instance(changed, store)
    try:
        assert b.wait_counted(10_000) == 10_000
        assert b.service.restore_outcomes["reference_changed"] == PARTITIONS
        # new windows from the restored offsets: new traffic fills them
        sent += produce(kafka_bootstrap, topic, 10_000, 5_000, t0)
        assert b.wait_counted(15_000) == 15_000
        deadline = time.time() + 20
        ev = None
        while time.time() < deadline:
            ev = b.service.evaluation("m")
            if ev is not None and ev.window_events > 0:
                break
            time.sleep(0.2)
        assert ev is not None
        assert 0 < ev.window_events <= expected_window(sent)
    finally:
        b.close()


def send(bootstrap: str, topic: str, events: list[dict[str, Any]], partition: int = 0) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    for e in events:
        producer.send(topic, value=json.dumps(e).encode(), partition=partition)
    producer.flush()
    producer.close()


def event(i: int, t: float, **extra: Any) -> dict[str, Any]:
    return {"event_id": f"e{i}", "model": "m", "timestamp": t, "features": {"x": 0.1}, **extra}


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_reference_file_replaced_between_runs_restarts_the_windows(
    tmp_path, kafka_bootstrap, setup
):
    ref, topic, group, t0, consumer = setup
    store = tmp_path / "state"
    sent = produce(kafka_bootstrap, topic, 0, 6_000, t0)
    a = Instance(make_config(kafka_bootstrap, topic, group, ref, consumer), store)
    try:
        assert a.wait_counted(6_000) == 6_000
    finally:
        a.close()
    rng = np.random.default_rng(9)
    ref.write_text(  # same columns and binning settings, other values: other bins
        "x,c\n" + "\n".join(f"{v},a" for v in rng.normal(3.0, 1.0, size=2000)) + "\n"
    )
    b = Instance(make_config(kafka_bootstrap, topic, group, ref, consumer), store)
    try:
        assert b.wait_counted(6_000) == 6_000
        assert b.service.restore_outcomes["reference_changed"] == PARTITIONS
        sent += produce(kafka_bootstrap, topic, 6_000, 3_000, t0)
        assert b.wait_counted(9_000) == 9_000
        wait_until(
            lambda: (ev := b.service.evaluation("m")) is not None and ev.window_events > 0,
            20,
            "a window counted against the new reference",
        )
        ev = b.service.evaluation("m")
        assert ev is not None
        # only events after the restart: none of the old bins is read against the new ones
        assert ev.window_events <= sum(1 for i, (_, t) in enumerate(sent) if i >= 6_000)
    finally:
        b.close()


def test_an_unwritable_alert_outbox_neither_stops_the_service_nor_double_counts(
    tmp_path, kafka_bootstrap, setup
):
    ref, topic, group, t0, consumer = setup
    got: list[bytes] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            got.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    alerts = {
        "alerts": {
            "rules": [
                {
                    "alert": "Traffic",
                    "metric": "driftline_window_events",
                    "match": {"model": "m"},
                    "op": ">=",
                    "threshold": 1,
                }
            ],
            "sinks": [
                {
                    "name": "ops",
                    "type": "webhook",
                    "url": f"http://127.0.0.1:{server.server_address[1]}/hook",
                }
            ],
        }
    }
    config = make_config(kafka_bootstrap, topic, group, ref, consumer, top=alerts)
    blocked = tmp_path / "outbox-here"
    blocked.write_text("a file where the outbox's directory should be")  # fails even as root
    store = tmp_path / "state"
    produce(kafka_bootstrap, topic, 0, 6_000, t0)
    a = Instance(config, store, outbox=blocked)
    try:
        assert a.wait_counted(6_000) == 6_000
        wait_until(lambda: bool(got), 30, "the notification, delivered from memory")
        assert a.thread.is_alive()  # an operational error, not a reason to stop
        assert a.service.snapshot().outbox_write_errors >= 1
        assert json.loads(got[0])["alerts"][0]["labels"]["alertname"] == "Traffic"
    finally:
        a.close()
    b = Instance(config, store, outbox=tmp_path / "writable")
    try:
        assert b.wait_counted(6_000) == 6_000  # the checkpoints matched their offsets
    finally:
        b.close()
        server.shutdown()


def test_one_event_fifty_minutes_ahead_does_not_blind_the_model(tmp_path, kafka_bootstrap, setup):
    ref, topic, group, _, consumer = setup
    top = {"validation": {"max_future": "1h"}}
    a = Instance(make_config(kafka_bootstrap, topic, group, ref, consumer, top=top), tmp_path)
    try:
        now = time.time()
        send(kafka_bootstrap, topic, [event(i, now - 1 + i / 200) for i in range(200)])
        assert a.wait_counted(200) == 200
        ahead = [event(1000, time.time() + 3000)]  # a fast clock, 50 minutes
        ahead += [event(1001 + i, time.time() + 120) for i in range(50)]  # 2 min, naive
        send(kafka_bootstrap, topic, ahead)
        assert a.wait_counted(251) == 251
        for burst in range(5):  # the next on-time events, stamped with a correct clock
            now = time.time()
            send(kafka_bootstrap, topic, [event(2000 + burst * 100 + i, now) for i in range(100)])
            time.sleep(0.5)
        assert a.wait_counted(751) == 751
        c = a.service.snapshot().counters["m"]
        assert c.late == 0
        assert c.future == 51
    finally:
        a.close()


def test_traffic_stops_and_the_window_moves_with_the_clock(tmp_path, kafka_bootstrap, setup):
    ref, topic, group, _, consumer = setup
    top = {"windows": {"pane": "2s", "size": "10s", "allowed_lateness": "1s"}}
    a = Instance(make_config(kafka_bootstrap, topic, group, ref, consumer, top=top), tmp_path)
    try:
        # live traffic: consumed as it is sent (a backlog read late does not move with the
        # clock), so the partitions are assigned first
        wait_until(lambda: bool(a.service.assigned), 30, "partitions assigned")
        now = time.time()
        send(kafka_bootstrap, topic, [event(i, now - 0.5 + i / 1000) for i in range(300)])
        assert a.wait_counted(300) == 300
        model = a.service.model_json("m")
        assert model is not None
        # no later event will ever close these panes: the clock does
        wait_until(
            lambda: (ev := a.service.evaluation("m")) is not None and ev.window_events == 300,
            15,
            "the panes to close on the wall clock",
        )
        assert a.service.model_json("m")["events_in_open_panes"] == 0
        wait_until(
            lambda: (ev := a.service.evaluation("m")) is not None and ev.window_events == 0,
            20,
            "the window to move past the last events",
        )
    finally:
        a.close()


def test_ground_truth_timestamp_1e12_and_latency_1e308_are_dead_lettered(
    tmp_path, kafka_bootstrap, setup
):
    ref, topic, group, _, consumer = setup
    a = Instance(make_config(kafka_bootstrap, topic, group, ref, consumer), tmp_path)
    try:
        now = time.time()
        send(kafka_bootstrap, topic, [event(0, now), event(1, now, latency_ms=1e308)])
        labels = [
            {"event_id": "e0", "model": "m", "label": "1", "timestamp": 1e12},
            {"event_id": "e0", "model": "m", "label": "1", "timestamp": now * 1000},
        ]
        send(kafka_bootstrap, topic + ".gt", labels)
        wait_until(lambda: sum(a.service.snapshot().invalid.values()) == 3, 30, "3 dead letters")
        s = a.service.snapshot()
        assert s.invalid == {("m", "timestamp_out_of_range"): 2, ("m", "invalid_field"): 1}
        c = s.counters["m"]
        assert (c.predictions, c.ground_truth) == (1, 0)
        assert c.latency_sum == 0.0
        assert c.delay_sum == 0.0
    finally:
        a.close()


def test_broker_unreachable_at_start_then_a_fresh_broker_gets_its_topics(tmp_path):
    ref = tmp_path / "ref.csv"
    write_reference(ref)
    kafka_port, http_port = free_port(), free_port()
    cfg = tmp_path / "driftline.yaml"
    cfg.write_text(
        f"""
kafka:
  bootstrap_servers: "127.0.0.1:{kafka_port}"
  predictions_topic: fresh.predictions
  partitions: 2
  poll_timeout_ms: 200
http: {{host: 127.0.0.1, port: {http_port}}}
windows: {{pane: 10s, size: 60s, allowed_lateness: 5s}}
state: {{dir: "{tmp_path / "state"}", checkpoint_interval: 0.5s}}
models:
  - name: m
    reference: {{path: "{ref}"}}
"""
    )
    log = tmp_path / "service.log"
    proc = start(cfg, log)
    broker = EmbeddedBroker(port=kafka_port)
    try:
        wait_until(lambda: _status(http_port, "/metrics") == 200, 20, "HTTP to serve")
        time.sleep(7.0)  # a few connection attempts
        assert proc.poll() is None, log.read_text()[-2000:]
        assert _status(http_port, "/readyz") == 503  # not ready, and it says so
        assert "Kafka not reachable; retrying" in log.read_text()
        broker.start()
        admin_topics: dict[str, int] = {}

        def created() -> bool:
            admin_topics.update(topic_partitions(broker.bootstrap_servers, ALL_TOPICS))
            return len(admin_topics) == len(ALL_TOPICS)

        wait_until(created, 60, "driftline to create its topics")
        assert admin_topics == {
            "fresh.predictions": 2,
            "driftline.ground-truth": 2,  # co-partitioned with the predictions
            "driftline.panes": 2,
            "driftline.dead-letter": 1,
        }
        produce_to(broker.bootstrap_servers, "fresh.predictions", 1_000)
        final = wait_for(http_port, proc, 1_000)
        assert final["driftline_events_total"] == 1_000
        assert "topics ready: created ['fresh.predictions'" in log.read_text()
    finally:
        proc.terminate()
        proc.wait(15)
        broker.stop()


ALL_TOPICS = [
    "fresh.predictions",
    "driftline.ground-truth",
    "driftline.panes",
    "driftline.dead-letter",
]


def _status(port: int, path: str) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return None


def produce_to(bootstrap: str, topic: str, n: int) -> None:
    now = time.time()
    send(bootstrap, topic, [event(i, now - 30 + i * 0.01) for i in range(n)])


KILL_CONFIG = """
kafka:
  bootstrap_servers: "{bootstrap}"
  group_id: {group}
  predictions_topic: {topic}
  ground_truth_topic: {topic}.gt
  panes_topic: {topic}.panes
  dead_letter_topic: {topic}.dlq
  max_batch: 2000
  poll_timeout_ms: 200
  consumer: {{max_poll_interval_ms: 3000, session_timeout_ms: 3000, heartbeat_interval_ms: 500}}
http: {{host: 127.0.0.1, port: {port}}}
windows: {{pane: {pane:g}s, size: {size:g}s, allowed_lateness: 5s}}
state: {{dir: "{state}", checkpoint_interval: 0.2s}}
models:
  - name: m
    reference: {{path: "{ref}"}}
"""


def kill_when(proc, writing: Callable[[], bool], timeout: float = 30.0) -> bool:
    """SIGKILL ``proc`` the moment ``writing()`` sees a temporary file of a write; True
    when the file was still there after the kill (the write was cut)."""
    deadline = time.monotonic() + timeout
    seen = False
    while time.monotonic() < deadline and proc.poll() is None:
        if writing():
            seen = True
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert seen, f"no write seen within {timeout}s"
    return writing()


def test_kill_9_during_checkpoint_writes_loses_and_doubles_nothing(
    tmp_path, kafka_bootstrap, setup
):
    ref, topic, group, t0, _ = setup
    port, state = free_port(), tmp_path / "state"
    cfg = tmp_path / "driftline.yaml"
    cfg.write_text(
        KILL_CONFIG.format(
            bootstrap=kafka_bootstrap,
            group=group,
            topic=topic,
            port=port,
            pane=PANE,
            size=SIZE,
            state=state,
            ref=ref,
        )
    )
    log, sent, cut = tmp_path / "service.log", [], []
    n, trials = 20_000, 5
    for trial in range(trials):
        sent += produce(kafka_bootstrap, topic, trial * n // trials, n // trials, t0)
        cut.append(kill_when(start(cfg, log), lambda: any(state.rglob(".checkpoint-*.tmp"))))
    proc = start(cfg, log)
    try:
        final = wait_for(port, proc, n)
        assert final["driftline_events_total"] == n, log.read_text()[-3000:]
        want = expected_window(sent)
        # stage 2 converges a little after stage 1 counted
        wait_until(lambda: scrape(port).get("driftline_window_events") == want, 30, "the window")
        assert scrape(port)["driftline_events_total"] == n  # and nothing came twice
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
    print(f"kills with the checkpoint write cut (temporary file left): {sum(cut)} of {trials}")


RULES_PER_START = 10


def test_kill_9_during_outbox_writes_loses_no_notification_and_no_event(
    tmp_path, kafka_bootstrap, setup
):
    ref, topic, group, t0, _ = setup
    port, state = free_port(), tmp_path / "state"
    got: list[tuple[str, str]] = []  # (webhook-id, alertname)

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            for a in body["alerts"]:
                if a["status"] == "firing":
                    got.append((self.headers["webhook-id"], a["labels"]["alertname"]))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
    cfg = tmp_path / "driftline.yaml"

    def configure(alerts: int) -> None:
        rules = "".join(
            f"    - {{alert: T{k}, metric: driftline_window_events, match: {{model: m}},"
            " op: '>=', threshold: 1}\n"
            for k in range(alerts)
        )
        cfg.write_text(
            KILL_CONFIG.format(
                bootstrap=kafka_bootstrap,
                group=group,
                topic=topic,
                port=port,
                pane=PANE,
                size=SIZE,
                state=state,
                ref=ref,
            )
            + f"alerts:\n  rules:\n{rules}  sinks:\n"
            + f"    - {{name: ops, type: webhook, url: '{hook}'}}\n"
        )

    log, sent, cut = tmp_path / "service.log", [], []
    n, trials = 20_000, 5
    outbox_tmp = lambda: any(state.glob("alerts/outbox/*/.checkpoint-*.tmp"))  # noqa: E731
    try:
        for trial in range(trials):
            # each start brings new rules: new notifications to write, ten of them so that
            # one of the short writes is caught in the act
            configure(RULES_PER_START * (trial + 1))
            sent += produce(kafka_bootstrap, topic, trial * n // trials, n // trials, t0)
            cut.append(kill_when(start(cfg, log), outbox_tmp))
        proc = start(cfg, log)
        try:
            final = wait_for(port, proc, n)
            assert final["driftline_events_total"] == n, log.read_text()[-3000:]
            wait_until(
                lambda: (
                    {name for _, name in got} == {f"T{k}" for k in range(RULES_PER_START * trials)}
                ),
                30,
                "every alert notified",
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
    finally:
        server.shutdown()
    ids = Counter(name for _, name in set(got))
    print(
        f"kills with the outbox write cut: {sum(cut)} of {trials}; "
        f"notifications per alert: {dict(ids)}"
    )


DRIFTLINE_RUN = [sys.executable, "-m", "consumers.cli", "run"]


def test_run_says_what_it_is_doing(tmp_path, kafka_bootstrap, setup):
    """URLs at start-up, a periodic one-line summary per model, ISO times in the API."""
    ref, topic, group, t0, _ = setup
    port = free_port()
    cfg = tmp_path / "driftline.yaml"
    cfg.write_text(
        KILL_CONFIG.format(
            bootstrap=kafka_bootstrap,
            group=group,
            topic=topic,
            port=port,
            pane=PANE,
            size=SIZE,
            state=tmp_path / "state",
            ref=ref,
        )
    )
    log = tmp_path / "service.log"
    proc = subprocess.Popen(
        [*DRIFTLINE_RUN, "--config", str(cfg), "--log-format", "text", "--summary-every", "0.5"],
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        sent = produce(kafka_bootstrap, topic, 0, 20_000, t0)
        assert wait_for(port, proc, 20_000)["driftline_events_total"] == 20_000
        want = f"m: 20000 events (+0); window {expected_window(sent)} events ["
        wait_until(lambda: want in log.read_text(), 30, "the summary line")
        text = log.read_text()
        assert f"serving HTTP: metrics http://127.0.0.1:{port}/metrics" in text
        line = next(x for x in text.splitlines() if want in x)
        assert "drifted " in line
        assert "alerts firing 0" in line
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/models/m", timeout=5) as r:
            ev = json.loads(r.read())["evaluation"]
        assert ev["evaluated_at"].endswith("Z")
        assert ev["window"]["start_time"] == rfc3339(ev["window"]["start"])
    finally:
        proc.terminate()
        proc.wait(15)
