"""One answer per model, whatever the number of instances.

Real ``driftline run`` processes on the broker, 6-partition input topics, drifting traffic
with delayed labels: three instances (one of them killed with SIGKILL mid-stream and
restarted) export exactly the model series one instance exports, from exactly one
instance, and send exactly one alert notification and one retraining request.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

PARTITIONS = 6
PANE, SIZE, LATENESS = 10.0, 60.0, 5.0
N = 9_000  # predictions, over 300 s of event time
#: model-level series: exported by the model's owner only
MODEL_SERIES = (
    "driftline_window_events",
    "driftline_feature_drift_score",
    "driftline_feature_drifted",
    "driftline_drifted_features_ratio",
    "driftline_prediction_drift_score",
    "driftline_model_performance",
    "driftline_model_performance_estimated",
    "driftline_label_coverage_ratio",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Receiver:
    """Counts the POSTs of the alert sink and the retraining target."""

    def __init__(self) -> None:
        self.paths: Counter[str] = Counter()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.paths[self.path] += 1
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def traffic(t0: float) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, dict]]]:
    """Predictions (x drifts by 2 std in the second half) and labels for 80% of them;
    the last event of every partition falls in the same pane, so every partition ends with
    the same watermark."""
    rng = np.random.default_rng(7)
    preds, labels = [], []
    for i in range(N):
        t = t0 + i * 300.0 / N
        x = float(rng.normal(2.0 if i >= N // 2 else 0.0, 1.0))
        score = 1.0 / (1.0 + math.exp(-x))
        p = i % PARTITIONS
        event = {
            "event_id": f"e{i}",
            "model": "m",
            "timestamp": t,
            "features": {"x": x, "c": "ab"[int(rng.integers(2))]},
            "prediction": {"score": score},
        }
        preds.append((p, event))
        if rng.random() < 0.8:
            y = "1" if rng.random() < score else "0"
            labels.append((p, {"event_id": f"e{i}", "model": "m", "label": y, "timestamp": t + 20}))
    for p in range(PARTITIONS):
        end = {"event_id": f"end{p}", "model": "m", "timestamp": t0 + 301.0 + p * 0.1}
        preds.append((p, {**end, "features": {"x": 0.0, "c": "a"}, "prediction": {"score": 0.5}}))
    return preds, labels


def produce(bootstrap: str, topic: str, events: list[tuple[int, dict[str, Any]]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20)
    for p, event in events:
        producer.send(topic, value=msgspec.json.encode(event), partition=p)
    producer.flush()
    producer.close()


def write_reference(path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=3000)
    score = 1.0 / (1.0 + np.exp(-x))
    label = (rng.random(3000) < score).astype(int)
    rows = ["x,c,prediction,label"] + [
        f"{a},{'ab'[int(b)]},{s},{y}"
        for a, b, s, y in zip(x, rng.integers(0, 2, 3000), score, label, strict=True)
    ]
    path.write_text("\n".join(rows) + "\n")


def write_config(path: Path, topics: dict[str, str], group: str, port: int, rport: int) -> None:
    path.write_text(
        f"""
kafka:
  bootstrap_servers: "{topics["bootstrap"]}"
  group_id: {group}
  predictions_topic: {topics["predictions"]}
  ground_truth_topic: {topics["ground_truth"]}
  dead_letter_topic: {topics["dlq"]}
  panes_topic: {topics["panes"]}
  max_batch: 2000
  poll_timeout_ms: 200
  consumer: {{max_poll_interval_ms: 3000, session_timeout_ms: 3000, heartbeat_interval_ms: 500}}
http: {{host: 127.0.0.1, port: {port}}}
windows: {{pane: {PANE:g}s, size: {SIZE:g}s, allowed_lateness: {LATENESS:g}s}}
state: {{kafka_topic: {topics["state"]}, checkpoint_interval: 1s}}
models:
  - name: m
    task: binary_classification
    reference: {{path: "{topics["reference"]}"}}
alerts:
  rules:
    - alert: XDrift
      metric: driftline_feature_drifted
      match: {{model: m, feature: x}}
      op: ">="
      threshold: 1
  sinks:
    - name: ops
      type: webhook
      url: http://127.0.0.1:{rport}/alerts
      send_resolved: false
retraining:
  - model: m
    on_alerts: [XDrift]
    target: {{type: http, url: "http://127.0.0.1:{rport}/retrain"}}
"""
    )


def start(cfg: Path, workdir: Path) -> subprocess.Popen[bytes]:
    workdir.mkdir(parents=True, exist_ok=True)  # each pod its own outbox (./state/alerts)
    root = Path(__file__).resolve().parents[2]
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "consumers.cli",
            "run",
            "--config",
            str(cfg),
            "--log-format",
            "text",
        ],
        cwd=workdir,
        stdout=(workdir / "service.log").open("ab"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(root)},
    )


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.labels.get("model") == "m":
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def model_series(samples: dict) -> dict:
    return {k: v for k, v in samples.items() if k[0] in MODEL_SERIES}


def settled(ports: list[int], want_predictions: int, timeout: float = 150.0) -> list[dict]:
    """Scrapes of every instance once all events are counted and the model series have
    stopped changing."""
    deadline, previous = time.time() + timeout, None
    while time.time() < deadline:
        try:
            scrapes = [scrape(p) for p in ports]
        except OSError:
            time.sleep(0.5)
            continue
        counted = sum(
            v
            for s in scrapes
            for (name, labels), v in s.items()
            if name == "driftline_events_total" and ("kind", "prediction") in labels
        )
        merged = [model_series(s) for s in scrapes]
        if counted == want_predictions and any(merged) and merged == previous:
            return scrapes
        previous = merged if counted == want_predictions else None
        time.sleep(2.5)
    raise AssertionError(f"not settled: counted {counted} of {want_predictions}; {previous}")


def owner_of(ports: list[int]) -> int:
    for i, port in enumerate(ports):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/models", timeout=3) as r:
            if json.load(r)["models"][0]["evaluated_here"]:
                return i
    raise AssertionError("no instance owns the model")


def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if check():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_three_instances_export_exactly_what_one_instance_exports(
    tmp_path, kafka_bootstrap, make_topic, make_group
):
    ref = tmp_path / "ref.csv"
    write_reference(ref)
    topics = {
        "bootstrap": kafka_bootstrap,
        "predictions": make_topic(partitions=PARTITIONS),
        "ground_truth": make_topic(partitions=PARTITIONS),
        "dlq": make_topic(),
        "panes": make_topic(partitions=3),
        "state": make_topic(),
        "reference": str(ref),
    }
    t0 = float(int(time.time()) // 100 * 100 - 2000)
    preds, labels = traffic(t0)
    cut = int(len(preds) * 0.65)
    first_labels = [lab for lab in labels if lab[1]["timestamp"] - 20 < preds[cut][1]["timestamp"]]
    produce(kafka_bootstrap, topics["predictions"], preds[:cut])
    produce(kafka_bootstrap, topics["ground_truth"], first_labels)

    # three instances; the model's owner is killed with SIGKILL once its alert went out
    receiver = Receiver()
    group = make_group()
    ports = [free_port() for _ in range(3)]
    procs = []
    for i, port in enumerate(ports):
        cfg = tmp_path / f"three-{i}.yaml"
        write_config(cfg, topics, group, port, receiver.port)
        procs.append(start(cfg, tmp_path / f"pod{i}"))
    try:
        wait_until(lambda: receiver.paths["/alerts"] >= 1, 120, "the drift alert")
        wait_until(lambda: receiver.paths["/retrain"] >= 1, 30, "the retraining request")
        victim = owner_of(ports)
        procs[victim].send_signal(signal.SIGKILL)
        procs[victim].wait(10)
        produce(kafka_bootstrap, topics["predictions"], preds[cut:])
        produce(kafka_bootstrap, topics["ground_truth"], labels[len(first_labels) :])
        time.sleep(5)  # the survivors take the killed instance's partitions over
        procs[victim] = start(tmp_path / f"three-{victim}.yaml", tmp_path / f"pod{victim}")
        three = settled(ports, len(preds))
        exporters = [i for i, s in enumerate(three) if model_series(s)]
        assert len(exporters) == 1, [len(model_series(s)) for s in three]
        # the web view's history is kept where the model is evaluated, and only there
        for i, port in enumerate(ports):
            url = f"http://127.0.0.1:{port}/api/v1/models/m"
            with urllib.request.urlopen(url, timeout=5) as r:
                data = json.load(r)
            if i in exporters:
                assert data["history"][-1]["window_end"] == data["evaluation"]["window"]["end"]
            else:
                assert (data["evaluation"], data["history"]) == (None, [])
        time.sleep(3)  # anything sent twice would have arrived by now
        assert receiver.paths == {"/alerts": 1, "/retrain": 1}
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        logs = "\n".join(
            (tmp_path / f"pod{i}" / "service.log").read_text()[-2000:] for i in range(3)
        )
    assert all(p.returncode == 0 or p.returncode == -9 for p in procs), logs

    # one instance, its own group, on the same topics: the reference answer
    receiver_one = Receiver()
    port = free_port()
    cfg = tmp_path / "one.yaml"
    write_config(cfg, topics, make_group(), port, receiver_one.port)
    proc = start(cfg, tmp_path / "single")
    try:
        (one,) = settled([port], len(preds))
        wait_until(lambda: receiver_one.paths["/retrain"] >= 1, 30, "the retraining request")
        time.sleep(2)
        assert receiver_one.paths == {"/alerts": 1, "/retrain": 1}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)
        receiver.close()
        receiver_one.close()

    want, got = model_series(one), model_series(three[exporters[0]])
    assert set(got) == set(want)
    for key, value in want.items():
        if key[0] in ("driftline_window_events", "driftline_feature_drifted"):
            assert got[key] == value, key
        else:
            assert math.isclose(got[key], value, rel_tol=1e-9, abs_tol=1e-12), (
                key,
                got[key],
                value,
            )
    # the window is the aligned one: the last 6 panes up to the common last closed pane
    end = math.floor((t0 + 301.0 - LATENESS) / PANE) * PANE
    in_window = sum(1 for _, e in preds if end - SIZE <= e["timestamp"] < end)
    assert want[("driftline_window_events", (("model", "m"),))] == in_window
    assert want[("driftline_feature_drifted", (("feature", "x"), ("model", "m")))] == 1
    print(
        "one instance and three agree on",
        len(want),
        "model series; e.g.",
        {
            k[0] + str(dict(k[1])): v
            for k, v in want.items()
            if "accuracy" in str(k) or "x" in str(k)
        },
    )
    # consumer-side counters are per instance and add up to the single instance's
    for name in ("driftline_events_total", "driftline_events_late_total"):
        total = Counter()
        for s in three:
            for (n, labels_), v in s.items():
                if n == name:
                    total[labels_] += v
        assert dict(total) == {k[1]: v for k, v in one.items() if k[0] == name}


def test_an_idle_partition_never_puts_its_old_panes_in_the_window(
    tmp_path, kafka_bootstrap, make_topic, make_group, consumer_config
):
    """Partition 3 sees events in [30, 90) s only; partitions 0-2 go on to ~1000 s while it
    stays silent longer than the window. Once it is idle, the merged window follows the
    others, its panes never enter it, and the reported range is the others' window."""
    from consumers.loop import ConsumerLoop
    from consumers.service import Service
    from monitor.config import DriftlineConfig

    ref = tmp_path / "ref.csv"
    write_reference(ref)
    topic = make_topic(partitions=4)
    config = DriftlineConfig.model_validate(
        {
            "kafka": {
                "bootstrap_servers": kafka_bootstrap,
                "group_id": make_group(),
                "predictions_topic": topic,
                "ground_truth_topic": make_topic(partitions=4),
                "dead_letter_topic": make_topic(),
                "panes_topic": make_topic(partitions=2),
                "consumer": consumer_config(),
                "poll_timeout_ms": 100,
            },
            "windows": {"pane": "10s", "size": "60s", "allowed_lateness": "5s"},
            "models": [{"name": "m", "reference": {"path": str(ref)}}],
        }
    )
    config = config.model_copy(
        update={"windows": config.windows.model_copy(update={"idle_timeout": 2.0})}
    )
    t0 = float(int(time.time()) // 100 * 100 - 3000)
    rng = np.random.default_rng(3)

    def event(i: int, t: float) -> dict[str, Any]:
        return {
            "event_id": f"e{i}",
            "model": "m",
            "timestamp": t0 + t,
            "features": {"x": float(rng.normal()), "c": "a"},
            "prediction": {"score": 0.5},
        }

    quiet = [(3, event(100_000 + k, 30.0 + k * 0.2)) for k in range(300)]
    produce(kafka_bootstrap, topic, quiet)
    service = Service(config)
    stop = threading.Event()
    loop = ConsumerLoop(service, config.kafka, checkpoint_interval=0.5)
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    sent: list[tuple[int, dict[str, Any]]] = []
    try:
        # live traffic on 0-2 for ~10 s of wall time, 1000 s of event time
        for chunk in range(10):
            events = [(i % 3, event(i, i * 0.05)) for i in range(chunk * 2000, (chunk + 1) * 2000)]
            produce(kafka_bootstrap, topic, events)
            sent += events
            time.sleep(1.0)
        last = max(e["timestamp"] for _, e in sent) - t0
        end = (math.floor((last - LATENESS) / PANE)) * PANE  # end of the last closed pane
        ev = None
        deadline = time.time() + 30
        while time.time() < deadline:
            ev = service.evaluation("m")
            if ev is not None and ev.window_end == t0 + end:
                break
            time.sleep(0.2)
        assert ev is not None
        assert (ev.window_start, ev.window_end) == (t0 + end - SIZE, t0 + end)
        want = sum(1 for _, e in sent if t0 + end - SIZE <= e["timestamp"] < t0 + end)
        assert ev.window_events == want
        assert service.events_counted("m") == len(sent) + len(quiet)
    finally:
        stop.set()
        thread.join(30)
