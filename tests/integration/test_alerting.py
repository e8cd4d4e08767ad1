"""Alert rules wired into the service: drift fires a signed Alertmanager-format webhook."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import msgspec
import numpy as np
import pytest
from kafka import KafkaProducer
from standardwebhooks import Webhook

from consumers.loop import ConsumerLoop
from consumers.service import Service
from monitor.config import DriftlineConfig

pytestmark = pytest.mark.integration

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def receiver():
    got: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((dict(self.headers.items()), body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, got


def test_drift_fires_the_rule_and_the_sink_gets_a_signed_v4_body(
    tmp_path, kafka_bootstrap, make_topic, make_group, consumer_config, monkeypatch
):
    monkeypatch.setenv("DRIFTLINE_TEST_SINK_SECRET", SECRET)
    rng = np.random.default_rng(5)
    ref = tmp_path / "ref.csv"
    ref.write_text("x,y\n" + "\n".join(f"{a},{b}" for a, b in rng.normal(size=(2000, 2))) + "\n")
    server, got = receiver()
    topic = make_topic()
    config = DriftlineConfig.model_validate(
        {
            "kafka": {
                "bootstrap_servers": kafka_bootstrap,
                "group_id": make_group(),
                "predictions_topic": topic,
                "dead_letter_topic": make_topic(),
                "consumer": consumer_config(),
                "poll_timeout_ms": 200,
            },
            "windows": {"pane": "10s", "size": "60s", "allowed_lateness": "1s"},
            "models": [{"name": "fraud", "reference": {"path": str(ref)}}],
            "alerts": {
                "rules": [
                    {
                        "alert": "FeatureDrift",
                        "metric": "driftline_feature_drifted",
                        "match": {"model": "fraud"},
                        "op": ">=",
                        "threshold": 1,
                        "severity": "warning",
                        "annotations": {"summary": "{{ feature }} drifted on {{ model }}"},
                    }
                ],
                "sinks": [
                    {
                        "name": "ops",
                        "type": "webhook",
                        "url": f"http://127.0.0.1:{server.server_address[1]}/hook",
                        "secret_env": "DRIFTLINE_TEST_SINK_SECRET",
                    }
                ],
            },
        }
    )
    t0 = float(int(time.time()) // 10 * 10 - 200)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=10)
    for i in range(3000):
        event = {
            "event_id": f"e{i}",
            "model": "fraud",
            "timestamp": t0 + i * 0.05,
            "features": {"x": float(rng.normal(2.0)), "y": float(rng.normal())},
        }
        producer.send(topic, msgspec.json.encode(event))
    producer.flush()
    producer.close()

    service = Service(config)
    service.enable_alerting(tmp_path / "outbox", time.time())
    stop = threading.Event()
    thread = threading.Thread(
        target=ConsumerLoop(service, config.kafka).run, args=(stop,), daemon=True
    )
    thread.start()
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not got:
            time.sleep(0.2)
        assert got, "the sink received nothing"
        headers, body = got[0]
        lower = {k.lower(): v for k, v in headers.items()}
        Webhook(SECRET).verify(body, lower)
        # and independently, by the Standard Webhooks spec: HMAC-SHA256 over id.timestamp.body
        key = base64.b64decode(SECRET.removeprefix("whsec_"))
        signed = f"{lower['webhook-id']}.{lower['webhook-timestamp']}.".encode() + body
        expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        assert f"v1,{expected}" in lower["webhook-signature"].split()
        payload = json.loads(body)
        assert payload["version"] == "4"
        assert payload["status"] == "firing"
        (alert,) = payload["alerts"]
        assert alert["labels"]["alertname"] == "FeatureDrift"
        assert alert["labels"]["model"] == "fraud"
        assert alert["labels"]["feature"] == "x"
        assert alert["annotations"]["summary"] == "x drifted on fraud"
        active = service.alerts_json()
        assert [a["labels"]["feature"] for a in active] == ["x"]
        snap = service.snapshot()
        assert snap.alerts_firing == {("fraud", "FeatureDrift", "warning"): 1}
        deadline = time.time() + 10
        while time.time() < deadline and not snap.deliveries.get(("ops", "success")):
            time.sleep(0.2)
            snap = service.snapshot()
        assert snap.deliveries.get(("ops", "success")) == 1
    finally:
        stop.set()
        thread.join(15)
        service.alerting.close()
        server.shutdown()


def test_a_notification_accepted_before_kill_9_is_delivered_once_after_restart(
    tmp_path, kafka_bootstrap, make_topic, make_group
):
    import os
    import signal
    import socket
    import subprocess
    import sys
    import urllib.request

    def free_port() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    rng = np.random.default_rng(6)
    ref = tmp_path / "ref.csv"
    ref.write_text("x\n" + "\n".join(str(v) for v in rng.normal(size=2000)) + "\n")
    topic, http_port, sink_port = make_topic(), free_port(), free_port()
    cfg = tmp_path / "driftline.yaml"
    cfg.write_text(
        f"""
kafka:
  bootstrap_servers: "{kafka_bootstrap}"
  group_id: {make_group()}
  predictions_topic: {topic}
  dead_letter_topic: {make_topic()}
  poll_timeout_ms: 200
  consumer: {{max_poll_interval_ms: 3000, session_timeout_ms: 3000, heartbeat_interval_ms: 500}}
http: {{host: 127.0.0.1, port: {http_port}}}
windows: {{pane: 10s, size: 60s, allowed_lateness: 1s}}
state: {{dir: "{tmp_path / "state"}", checkpoint_interval: 0.5s}}
models:
  - name: fraud
    reference: {{path: "{ref}"}}
alerts:
  rules:
    - alert: FeatureDrift
      metric: driftline_feature_drifted
      match: {{model: fraud}}
      threshold: 1
  sinks:
    - {{name: ops, type: webhook, url: "http://127.0.0.1:{sink_port}/hook"}}
"""
    )
    t0 = float(int(time.time()) // 10 * 10 - 200)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=10)
    for i in range(3000):
        event = {
            "event_id": f"e{i}",
            "model": "fraud",
            "timestamp": t0 + i * 0.05,
            "features": {"x": float(rng.normal(2.0))},
        }
        producer.send(topic, msgspec.json.encode(event))
    producer.flush()
    producer.close()
    log = (tmp_path / "service.log").open("ab")
    cmd = [
        sys.executable,
        "-m",
        "consumers.cli",
        "run",
        "--config",
        str(cfg),
        "--log-format",
        "text",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def firing() -> list[dict]:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{http_port}/api/v1/alerts", timeout=2
            ) as r:
                return json.loads(r.read())["alerts"]
        except OSError:
            return []

    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not firing():
            time.sleep(0.2)
        assert firing(), "the alert never fired"
        time.sleep(1.0)  # the receiver is down: delivery is being retried
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    outbox = tmp_path / "state" / "alerts" / "outbox"
    assert list(outbox.iterdir()), "the notification was not in the outbox"

    # the receiver comes up on the sink's port; the service restarts
    got: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            got.append(
                (dict(self.headers.items()), self.rfile.read(int(self.headers["Content-Length"])))
            )
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", sink_port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and not got:
            time.sleep(0.2)
        time.sleep(5)  # time enough for a duplicate to show up
        ids = {h.get("webhook-id") for h, _ in got}
        bodies = [json.loads(b) for _, b in got]
        assert len(ids) == 1, (ids, bodies)
        assert [b["status"] for b in bodies] == ["firing"]
        assert firing()  # restored as firing, not re-notified
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        server.shutdown()
