"""Webhook delivery against real HTTP receivers on loopback, and the exported rules
against the real promtool.

Each receiver is an ``http.server`` answering from a script of responses; the
dispatcher under test is the real one, on its own thread, with short backoffs.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from alerts.delivery import Dispatcher
from alerts.destinations import Destination
from alerts.outbox import Notification, Outbox, new_notification_id
from alerts.payloads import json_request, webhook_body
from alerts.promrules import export_rules
from alerts.rules import RuleEngine, Sample
from consumers.checkpoints import DirectoryStore
from monitor.config import DriftlineConfig

REPO = Path(__file__).resolve().parents[2]
PROMTOOL_HINT = "promtool not found: apt-get install -y prometheus (or make prometheus-tools)"


@dataclass(frozen=True)
class Received:
    at: float  # time.monotonic()
    path: str
    headers: dict[str, str]
    body: bytes


class Receiver:
    """An HTTP server on 127.0.0.1 that records every request and answers from ``script``
    (``(status, headers, delay)`` entries, then 200)."""

    def __init__(self, script: list[tuple[int, dict[str, str], float]] | None = None,
                 port: int = 0) -> None:  # fmt: skip
        self.requests: list[Received] = []
        self.script = list(script or [])
        self._lock = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    status, headers, delay = (
                        receiver.script.pop(0) if receiver.script else (200, {}, 0.0)
                    )
                    receiver.requests.append(
                        Received(time.monotonic(), self.path, dict(self.headers.items()), body)
                    )
                    receiver._lock.notify_all()
                time.sleep(delay)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that timed out and left: expected here

        self.server = Server(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.requests) < count and time.monotonic() < deadline:
                self._lock.wait(0.05)
            return list(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(*script: tuple[int, dict[str, str], float], port: int = 0) -> Receiver:
        made.append(Receiver(list(script), port))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def dispatcher(tmp_path: Path) -> Iterator[Callable[..., Dispatcher]]:
    made: list[Dispatcher] = []

    def make(*destinations: Destination, **kw: Any) -> Dispatcher:
        options: dict[str, Any] = {"backoff_base": 0.05, "backoff_max": 0.2} | kw
        outbox = Outbox(DirectoryStore(tmp_path / "state"))
        made.append(Dispatcher(outbox, destinations, **options))
        return made[-1]

    yield make
    for d in made:
        d.close(timeout=5)


def notification(url: str, sink: str = "ops", nid: str | None = None) -> Notification:
    payload = {"version": "4", "status": "firing", "alerts": [{"labels": {"model": "fraud"}}]}
    return Notification(nid or new_notification_id(), sink, json_request(url, payload), time.time())


def fail(status: int, headers: dict[str, str] | None = None, delay: float = 0.0) -> Any:
    return (status, headers or {}, delay)


def outbox_files(tmp_path: Path) -> list[str]:
    """Notifications stored in the outbox (one key, a folder, per notification)."""
    return DirectoryStore(tmp_path / "state").keys("alerts/outbox/")


def settle(d: Dispatcher) -> None:
    assert d.wait_idle(10)
    time.sleep(0.3)  # several backoffs long: a wrong retry would show


def test_500_three_times_then_delivered_once_with_the_same_id(
    receiver: Callable[..., Receiver], dispatcher: Callable[..., Dispatcher], tmp_path: Path
) -> None:
    r = receiver(fail(500), fail(502), fail(503))
    d = dispatcher(Destination("ops"))
    n = notification(r.url)
    assert d.submit(n)
    settle(d)
    got = r.requests
    assert len(got) == 4
    assert {g.headers["webhook-id"] for g in got} == {n.id}
    assert {g.body for g in got} == {n.request.body.encode()}
    assert d.delivery_counts() == {("ops", "retry"): 3, ("ops", "success"): 1}
    assert outbox_files(tmp_path) == []


def test_retry_after_is_honoured(
    receiver: Callable[..., Receiver], dispatcher: Callable[..., Dispatcher]
) -> None:
    r = receiver(fail(429, {"Retry-After": "1"}))
    d = dispatcher(Destination("ops"))
    d.submit(notification(r.url))
    first, second = r.wait_for(2)
    assert second.at - first.at >= 1.0  # the backoff alone would be <= 0.05 s
    assert d.wait_idle(5)
    assert d.delivery_counts() == {("ops", "retry"): 1, ("ops", "success"): 1}


def test_a_client_error_is_not_retried(
    receiver: Callable[..., Receiver], dispatcher: Callable[..., Dispatcher], tmp_path: Path
) -> None:
    r = receiver(fail(400))
    d = dispatcher(Destination("ops"))
    d.submit(notification(r.url))
    settle(d)
    assert len(r.requests) == 1
    assert d.delivery_counts() == {("ops", "failed"): 1}
    assert outbox_files(tmp_path) == []


def test_410_disables_the_sink_and_only_that_sink(
    receiver: Callable[..., Receiver], dispatcher: Callable[..., Dispatcher]
) -> None:
    gone, alive = receiver(fail(410)), receiver()
    d = dispatcher(Destination("gone"), Destination("alive"))
    d.submit(notification(gone.url, "gone"))
    assert d.wait_idle(5)
    d.submit(notification(gone.url, "gone"))
    d.submit(notification(alive.url, "alive"))
    settle(d)
    assert len(gone.requests) == 1
    assert len(alive.requests) == 1
    assert d.disabled() == {"gone"}
    assert d.delivery_counts() == {
        ("gone", "disabled"): 1,
        ("gone", "dropped"): 1,
        ("alive", "success"): 1,
    }


def test_timeouts_are_retried_and_submit_never_waits_for_the_receiver(
    receiver: Callable[..., Receiver], dispatcher: Callable[..., Dispatcher]
) -> None:
    r = receiver(fail(200, delay=1.0))
    d = dispatcher(Destination("ops", timeout=0.3))
    n = notification(r.url)
    started = time.monotonic()
    d.submit(n)
    assert time.monotonic() - started < 0.5  # the receiver takes 1 s
    assert d.wait_idle(5)
    assert [g.headers["webhook-id"] for g in r.requests] == [n.id, n.id]
    assert d.delivery_counts() == {("ops", "retry"): 1, ("ops", "success"): 1}


def test_signatures_verify_with_the_standard_webhooks_verifier(
    receiver: Callable[..., Receiver], dispatcher: Callable[..., Dispatcher]
) -> None:
    secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
    signed, plain = receiver(fail(503)), receiver()
    d = dispatcher(Destination("signed", secret=secret), Destination("plain"))
    n = notification(signed.url, "signed")
    d.submit(n)
    d.submit(notification(plain.url, "plain"))
    assert d.wait_idle(5)
    assert len(signed.requests) == 2  # each attempt is signed afresh, with the same id
    for got in signed.requests:
        assert got.headers["webhook-id"] == n.id
        assert Webhook(secret).verify(got.body, got.headers) == json.loads(n.request.body)
        tampered = got.body.replace(b"fraud", b"fraue")
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(tampered, got.headers)
        other = "whsec_" + base64.b64encode(os.urandom(32)).decode()
        with pytest.raises(WebhookVerificationError):
            Webhook(other).verify(got.body, got.headers)
    (unsigned,) = plain.requests
    assert "webhook-id" in unsigned.headers
    assert "webhook-signature" not in unsigned.headers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_the_outbox_survives_a_restart(
    receiver: Callable[..., Receiver], dispatcher: Callable[..., Dispatcher], tmp_path: Path
) -> None:
    port = free_port()  # nothing listens there yet: connection refused
    n = notification(f"http://127.0.0.1:{port}/hook")
    first = dispatcher(Destination("ops", timeout=1.0))
    first.submit(n)
    wait_until(lambda: first.delivery_counts().get(("ops", "retry"), 0) >= 1)
    first.close()
    assert outbox_files(tmp_path) == [f"alerts/outbox/{n.id}"]

    r = receiver(port=port)
    second = dispatcher(Destination("ops"))
    assert second.wait_idle(5)
    second.close()
    assert dispatcher(Destination("ops"), start=False).pending() == 0
    time.sleep(0.2)
    assert [g.headers["webhook-id"] for g in r.requests] == [n.id]


CRASHING_SERVICE = textwrap.dedent("""
    import sys, time
    from alerts.delivery import Dispatcher
    from alerts.destinations import Destination
    from alerts.outbox import Notification, Outbox
    from alerts.payloads import json_request
    from consumers.checkpoints import DirectoryStore

    box = Outbox(DirectoryStore(sys.argv[1]))
    d = Dispatcher(box, [Destination("ops", timeout=1.0)], backoff_base=60.0)
    d.submit(Notification("msg_crash", "ops", json_request(sys.argv[2], {"a": 1}), time.time()))
    print("accepted", flush=True)
    time.sleep(60)
""")


def test_a_notification_accepted_before_kill_9_is_delivered_once_after_restart(
    receiver: Callable[..., Receiver], dispatcher: Callable[..., Dispatcher], tmp_path: Path
) -> None:
    port = free_port()
    child = subprocess.Popen(
        [sys.executable, "-c", CRASHING_SERVICE, str(tmp_path / "state"),
         f"http://127.0.0.1:{port}/hook"],
        cwd=REPO, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "accepted"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    r = receiver(port=port)
    d = dispatcher(Destination("ops"))
    assert d.wait_idle(5)
    time.sleep(0.2)
    assert [g.headers["webhook-id"] for g in r.requests] == ["msg_crash"]


def test_backoff_schedule_with_a_fake_clock(
    receiver: Callable[..., Receiver], dispatcher: Callable[..., Dispatcher]
) -> None:
    r = receiver(fail(503), fail(503), fail(503), fail(429, {"Retry-After": "30"}))
    now = [1000.0]
    d = dispatcher(Destination("ops"), clock=lambda: now[0], rand=lambda: 1.0,
                   backoff_base=1.0, backoff_max=3.0, start=False)  # fmt: skip
    n = Notification("msg_fake", "ops", json_request(r.url, {}), now[0])
    d.submit(n)
    waits = []
    while (wait := d.pump()) is not None:
        assert d.pump() == wait  # nothing is due before its time
        waits.append(wait)
        now[0] += wait
    assert waits == [1.0, 2.0, 3.0, 30.0]  # doubling, capped, then the server's 30 s
    assert len(r.requests) == 5


def test_give_up_after_max_attempts_or_max_age_and_drop_unknown_sinks(
    receiver: Callable[..., Receiver], dispatcher: Callable[..., Dispatcher], tmp_path: Path
) -> None:
    r = receiver(*[fail(500)] * 5)
    now = [0.0]
    d = dispatcher(Destination("ops"), clock=lambda: now[0], max_attempts=3, max_age=100.0,
                   start=False)  # fmt: skip
    d.submit(Notification("msg_a", "ops", json_request(r.url, {}), 0.0))
    while (wait := d.pump()) is not None:
        now[0] += wait
    assert len(r.requests) == 3
    d.submit(Notification("msg_old", "ops", json_request(r.url, {}), -200.0))
    d.submit(Notification("msg_lost", "nowhere", json_request(r.url, {}), 0.0))
    assert d.pump() is None
    assert len(r.requests) == 3
    assert d.delivery_counts() == {
        ("ops", "retry"): 2,
        ("ops", "failed"): 1,
        ("ops", "dropped"): 1,
        ("nowhere", "dropped"): 1,
    }
    assert outbox_files(tmp_path) == []


def test_retraining_deliveries_are_counted_per_model_and_target(
    receiver: Callable[..., Receiver], dispatcher: Callable[..., Dispatcher]
) -> None:
    r = receiver()
    d = dispatcher(Destination("retraining.fraud.http"))
    req = json_request(r.url, {"type": "retraining.requested", "id": "rt_1"})
    d.submit(Notification("rt_1", "retraining.fraud.http", req, time.time(), "fraud", "http"))
    assert d.wait_idle(5)
    assert d.retraining_counts() == {("fraud", "http"): 1}
    assert d.delivery_counts() == {("retraining.fraud.http", "success"): 1}


def test_an_alert_from_the_engine_reaches_the_receiver_as_alertmanager_json(
    receiver: Callable[..., Receiver], dispatcher: Callable[..., Dispatcher]
) -> None:
    config = rules_config()
    engine = RuleEngine(config.alerts.rules)
    sample: Sample = ("driftline_feature_drifted", {"model": "fraud", "feature": "age"}, 1.0)
    fired = [t.alert for t in engine.evaluate([sample], now=time.time()) if t.notifies]
    r = receiver()
    d = dispatcher(Destination("ops"))
    body = webhook_body(fired, receiver="ops")
    d.submit(Notification(new_notification_id(), "ops", json_request(r.url, body), time.time()))
    (got,) = r.wait_for(1)
    delivered = json.loads(got.body)
    assert delivered["version"] == "4"
    assert delivered["alerts"][0]["labels"]["alertname"] == "Drift"
    assert delivered["alerts"][0]["annotations"]["summary"] == "age drifted to 1"


def rules_config() -> DriftlineConfig:
    return DriftlineConfig.model_validate({
        "models": [{"name": "fraud", "reference": {"path": "r.csv"}}],
        "alerts": {"rules": [
            {"alert": "Drift", "metric": "driftline_feature_drifted",
             "match": {"model": "fraud"}, "threshold": 1,
             "annotations": {"summary": "{{ feature }} drifted to {{ value }}"}},
            {"alert": "DriftScore", "metric": "driftline_feature_drift_score",
             "match": {"model": "fraud", "method": "psi"}, "op": ">", "threshold": 0.2,
             "for": "2m", "keep_firing_for": "3m", "labels": {"team": "risk"},
             "annotations": {"summary": "{{ feature }} drifted to {{ value }}",
                             "description": "{{ $labels.model }}: {{ $value }} > 0.2"}},
            {"alert": "Quoted", "metric": "driftline_model_performance",
             "match": {"model": 'we"ird\\name', "metric": "accuracy"}, "op": "<",
             "threshold": 0.8, "severity": "critical", "for": "90m"},
        ]},
    })  # fmt: skip


# (labels, values per minute; None = the series is gone, marked stale)
SERIES: list[tuple[dict[str, str], list[float | None]]] = [
    ({"model": "fraud", "feature": "amount", "method": "psi"},
     [0.05, 0.3, 0.3, 0.3, 0.05, 0.3, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.05]),
    ({"model": "fraud", "feature": "age", "method": "psi"},
     [0.3, 0.3, 0.35, 0.4, 0.45, None, None, None, None, None, None, None, None]),
    ({"model": "churn", "feature": "age", "method": "psi"}, [0.9] * 13),
    ({"model": "fraud", "feature": "age", "method": "ks"}, [0.9] * 13),
]  # fmt: skip


def promtool_values(values: list[float | None]) -> str:
    return " ".join("stale" if v is None else repr(v) for v in values)


def test_exported_rules_pass_promtool_and_fire_as_the_engine_does(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip(PROMTOOL_HINT)
    config = rules_config()
    (tmp_path / "rules.yml").write_text(export_rules(config))
    check = subprocess.run(
        [promtool, "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr

    # Prometheus evaluating the exported rules on these series must see the same firing
    # alerts, labels and annotations as the engine at every minute.
    engine = RuleEngine(config.alerts.rules)
    tests = []
    for minute in range(len(SERIES[0][1])):
        samples: list[Sample] = [
            ("driftline_feature_drift_score", labels, v)
            for labels, values in SERIES
            if (v := values[minute]) is not None
        ]
        engine.evaluate(samples, now=60.0 * minute)
        firing = [a for a in engine.active() if a.name == "DriftScore" and a.state == "firing"]
        exp = [
            {
                "exp_labels": {k: v for k, v in a.labels.items() if k != "alertname"},
                "exp_annotations": dict(a.annotations),
            }
            for a in firing
        ]
        tests.append({"eval_time": f"{minute}m", "alertname": "DriftScore", "exp_alerts": exp})
    fired_at = [t["eval_time"] for t in tests if t["exp_alerts"]]
    assert fired_at[0] == "2m"  # sanity: the scenario does fire, and late enough to test 'for'
    unit = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {
                        "series": "driftline_feature_drift_score{"
                        + ",".join(f'{k}="{v}"' for k, v in labels.items())
                        + "}",
                        "values": promtool_values(values),
                    }
                    for labels, values in SERIES
                ],
                "alert_rule_test": tests,
            }
        ],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(unit, sort_keys=False))
    run = subprocess.run(
        [promtool, "test", "rules", str(tmp_path / "test.yml")], capture_output=True, text=True
    )
    assert run.returncode == 0, run.stdout + run.stderr
