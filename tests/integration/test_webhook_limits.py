"""Receivers that misbehave on purpose, on loopback: one that drips its answer a byte at a
time, one that answers with hundreds of megabytes, and the credentials and file modes of
the outbox they are delivered from. Nothing is mocked: real sockets, the real
dispatcher and the real directory store.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import socket
import socketserver
import ssl
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from alerts import bounded_http
from alerts.delivery import Dispatcher
from alerts.destinations import Destination
from alerts.exceptions import AlertsError
from alerts.outbox import Notification, Outbox, new_notification_id
from alerts.payloads import json_request
from alerts.rules import Sample
from consumers.alerting import Alerting
from consumers.checkpoints import DirectoryStore
from monitor.config import DriftlineConfig

Answer = Callable[[socket.socket, "Exchange"], None]


@dataclass
class Exchange:
    """One request as a receiver saw it: when it arrived, its headers and body, and when
    the client closed the connection (``None``: not seen)."""

    at: float
    headers: dict[str, str]
    body: bytes
    closed_at: float | None = None
    sent: int = 0  # body bytes the receiver managed to send


@dataclass
class RawReceiver:
    """An HTTP/1.1 receiver on 127.0.0.1 that reads each request and lets ``answer``
    write whatever bytes it likes on the socket."""

    answer: Answer
    exchanges: list[Exchange] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock: socket.socket = self.request
                head, body = b"", b""
                while b"\r\n\r\n" not in head:
                    chunk = sock.recv(65536)
                    if not chunk:
                        return
                    head += chunk
                head, body = head.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")[1:]
                headers = {
                    k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines)
                }
                while len(body) < int(headers.get("content-length", 0)):
                    body += sock.recv(65536)
                exchange = Exchange(time.monotonic(), headers, body)
                receiver.exchanges.append(exchange)
                try:
                    receiver.answer(sock, exchange)
                except OSError:
                    exchange.closed_at = time.monotonic()  # the client went away

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Exchange]:
        deadline = time.monotonic() + timeout
        while len(self.exchanges) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return list(self.exchanges)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def client_closed(sock: socket.socket, within: float) -> bool:
    """Whether the client closed its end within ``within`` seconds (the socket turns
    readable and reads as empty)."""
    ready, _, _ = select.select([sock], [], [], within)
    if not ready:
        return False
    try:
        return sock.recv(1) == b""
    except OSError:
        return True


def drip(every: float, bytes_at_most: int = 60) -> Answer:
    """``200 OK``, then a header line one byte every ``every`` seconds, never finished."""

    def answer(sock: socket.socket, ex: Exchange) -> None:
        sock.sendall(b"HTTP/1.1 200 OK\r\nX-Drip: ")
        for _ in range(bytes_at_most):
            if client_closed(sock, every):
                ex.closed_at = time.monotonic()
                return
            sock.sendall(b"a")

    return answer


def drip_body(status: str, every: float) -> Answer:
    """``status`` and its headers at once, then the body one byte every ``every`` seconds."""

    def answer(sock: socket.socket, ex: Exchange) -> None:
        sock.sendall(f"HTTP/1.1 {status}\r\nContent-Length: 1000\r\n\r\n".encode())
        for _ in range(1000):
            if client_closed(sock, every):
                ex.closed_at = time.monotonic()
                return
            sock.sendall(b"a")
            ex.sent += 1

    return answer


def ok(sock: socket.socket, ex: Exchange) -> None:
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")


def huge(status: str, size: int) -> Answer:
    """``status`` with a body of ``size`` bytes, written lazily 64 KiB at a time."""
    chunk = b"x" * 65536

    def answer(sock: socket.socket, ex: Exchange) -> None:
        sock.sendall(f"HTTP/1.1 {status}\r\nContent-Length: {size}\r\n\r\n".encode())
        while ex.sent < size:
            ex.sent += sock.send(chunk[: size - ex.sent])
        client_closed(sock, 5.0)

    return answer


def gated(gate: threading.Event) -> Answer:
    """Waits for ``gate`` before answering 200 (the request sits in the outbox meanwhile)."""

    def answer(sock: socket.socket, ex: Exchange) -> None:
        gate.wait(20)
        ok(sock, ex)

    return answer


@pytest.fixture
def receiver() -> Iterator[Callable[[Answer], RawReceiver]]:
    made: list[RawReceiver] = []

    def make(answer: Answer) -> RawReceiver:
        made.append(RawReceiver(answer))
        return made[-1]

    yield make
    for r in made:
        r.close()


@pytest.fixture
def dispatcher(tmp_path: Path) -> Iterator[Callable[..., Dispatcher]]:
    made: list[Dispatcher] = []

    def make(*destinations: Destination, **kw: Any) -> Dispatcher:
        options: dict[str, Any] = {"backoff_base": 0.05, "backoff_max": 0.2} | kw
        made.append(Dispatcher(Outbox(DirectoryStore(tmp_path / "state")), destinations, **options))
        return made[-1]

    yield make
    for d in made:
        d.close(timeout=5)


def notification(url: str, sink: str) -> Notification:
    payload = {"version": "4", "status": "firing", "alerts": [{"labels": {"model": "fraud"}}]}
    return Notification(new_notification_id(), sink, json_request(url, payload), time.time())


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_dripping_receiver_holds_its_worker_no_longer_than_the_deadline(
    receiver: Callable[[Answer], RawReceiver], dispatcher: Callable[..., Dispatcher]
) -> None:
    # one byte a second: each read is well within any per-read timeout of 3 s
    dripping, healthy = receiver(drip(every=1.0)), receiver(ok)
    d = dispatcher(Destination("drip", timeout=3.0), Destination("ok"), max_attempts=1)
    d.submit(notification(dripping.url, "drip"))
    (first,) = dripping.wait_for(1)
    d.submit(notification(healthy.url, "ok"))
    (other,) = healthy.wait_for(1, timeout=1.0)
    # the healthy sink was served while the first one was still dripping
    assert other.at - first.at < 1.0
    assert first.closed_at is None
    assert d.wait_idle(10)
    wait_until(lambda: first.closed_at is not None, 2.0)
    assert first.closed_at is not None
    held = first.closed_at - first.at
    assert 2.5 < held < 4.0, f"the dripping receiver held its worker {held:.2f}s"
    assert d.delivery_counts() == {("drip", "failed"): 1, ("ok", "success"): 1}


def test_the_deadline_also_ends_the_read_of_a_dripping_error_body(
    receiver: Callable[[Answer], RawReceiver],
) -> None:
    r = receiver(drip_body("500 Internal Server Error", every=0.25))
    started = time.monotonic()
    with bounded_http.new_client() as client:
        resp = bounded_http.send(client, "POST", r.url, content=b"{}", headers={}, deadline=1.5)
    took = time.monotonic() - started
    assert resp.status_code == 500
    assert 1.4 < took < 2.5, f"the read took {took:.2f}s"
    assert 0 < len(resp.body) <= 10  # what arrived before the deadline, a byte at a time
    assert resp.body == b"a" * len(resp.body)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl for a certificate")
def test_the_deadline_ends_a_dripping_answer_over_tls(tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))
    closed = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(65536)
            tls.sendall(b"HTTP/1.1 200 OK\r\nX-Drip: ")
            try:
                for _ in range(40):
                    time.sleep(0.25)
                    tls.sendall(b"a")
            except OSError:
                closed.set()

    threading.Thread(target=serve, daemon=True).start()
    url = f"https://127.0.0.1:{listener.getsockname()[1]}/hook"
    started = time.monotonic()
    with httpx.Client(verify=False) as client, pytest.raises(bounded_http.DeadlineExceeded):
        bounded_http.send(client, "POST", url, content=b"{}", headers={}, deadline=1.5)
    assert time.monotonic() - started < 2.5
    assert closed.wait(2.0)
    listener.close()


def vm_rss() -> int:
    """This process's resident memory in bytes (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_a_huge_answer_costs_little_memory_and_the_delivery_settles(
    receiver: Callable[[Answer], RawReceiver], dispatcher: Callable[..., Dispatcher]
) -> None:
    size = 200 * 1024 * 1024
    accepted, refused = receiver(huge("200 OK", size)), receiver(huge("400 Bad Request", size))
    d = dispatcher(Destination("accepted"), Destination("refused"))
    base, peak, stop = vm_rss(), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], vm_rss())
            time.sleep(0.002)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        d.submit(notification(accepted.url, "accepted"))
        d.submit(notification(refused.url, "refused"))
        assert d.wait_idle(10)
    finally:
        stop.set()
        sampler.join()
    grown = peak[0] - base
    assert grown < 32 * 1024 * 1024, f"RSS grew by {grown / 2**20:.1f} MiB"
    assert d.delivery_counts() == {("accepted", "success"): 1, ("refused", "failed"): 1}
    for r in (accepted, refused):
        (ex,) = r.exchanges
        wait_until(lambda ex=ex: ex.closed_at is not None, 5.0)
        assert ex.sent < size  # the client hung up long before the end


def outbox_bytes(state: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(state.rglob("*")) if p.is_file())


def assert_owner_only(state: Path) -> None:
    for p in [state, *state.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o700 if p.is_dir() else 0o600), f"{p}: {oct(mode)}"


def retraining_config(url: str) -> DriftlineConfig:
    return DriftlineConfig.model_validate(
        {
            "models": [{"name": "fraud", "reference": {"path": "r.csv"}}],
            "alerts": {
                "rules": [
                    {"alert": "Drift", "metric": "driftline_feature_drifted",
                     "match": {"model": "fraud"}, "threshold": 1}
                ]
            },
            "retraining": [
                {"model": "fraud", "on_alerts": ["Drift"],
                 "target": {"type": "airflow", "url": url, "dag_id": "retrain_fraud",
                            "token_env": "DRIFTLINE_TEST_AIRFLOW_TOKEN"}}
            ],
        }
    )  # fmt: skip


def test_the_bearer_token_is_sent_but_never_written_to_the_outbox(
    receiver: Callable[[Answer], RawReceiver], tmp_path: Path
) -> None:
    token = "tok-" + os.urandom(16).hex()
    gate = threading.Event()
    r = receiver(gated(gate))
    base = r.url.removesuffix("/hook")
    state = tmp_path / "state"
    alerting = Alerting(
        retraining_config(base),
        DirectoryStore(state),
        time.time(),
        environ={"DRIFTLINE_TEST_AIRFLOW_TOKEN": token},
    )
    try:
        unit = alerting.new_unit(time.time())
        sample: Sample = ("driftline_feature_drifted", {"model": "fraud", "feature": "age"}, 1.0)
        assert alerting.evaluate(unit, [sample], {}, time.time(), ["fraud"])
        (ex,) = r.wait_for(1)  # the request is on its way; its record is on disk
        stored = outbox_bytes(state)
        assert b"retraining.requested" in stored  # the record is there
        assert token.encode() not in stored
        assert b"Authorization" not in stored
        assert_owner_only(state)
        gate.set()
        assert alerting.dispatcher.wait_idle(10)
        assert ex.headers["authorization"] == f"Bearer {token}"
        assert json.loads(ex.body)["dag_run_id"].startswith("driftline-rt_")
    finally:
        gate.set()
        alerting.close()


def test_an_unset_token_env_fails_at_start_naming_the_key_and_the_variable(
    tmp_path: Path,
) -> None:
    with pytest.raises(AlertsError, match=r"token_env: environment variable "
                       r"DRIFTLINE_TEST_AIRFLOW_TOKEN is not set"):  # fmt: skip
        Alerting(retraining_config("http://127.0.0.1:9"), DirectoryStore(tmp_path), 0.0, environ={})


def test_an_old_record_holding_a_token_is_rewritten_without_it_on_load(
    receiver: Callable[[Answer], RawReceiver], dispatcher: Callable[..., Dispatcher], tmp_path: Path
) -> None:
    gate = threading.Event()
    r = receiver(gated(gate))
    state = tmp_path / "state"
    stale = "stale-" + os.urandom(8).hex()
    old = json_request(r.url, {"id": "rt_old"}, headers={"Authorization": f"Bearer {stale}"})
    record = Notification("rt_old", "retraining.fraud.http", old, time.time(), "fraud", "http")
    # as an earlier driftline wrote it: the token in the record, the file world-readable
    DirectoryStore(state).save("alerts/outbox/rt_old", json.dumps(record.to_dict()).encode())
    for p in state.rglob("checkpoint-*.bin"):
        p.chmod(0o644)
    assert stale.encode() in outbox_bytes(state)

    d = dispatcher(Destination("retraining.fraud.http", token="fresh"))
    try:
        (ex,) = r.wait_for(1)
        stored = outbox_bytes(state)
        assert b"rt_old" in stored  # still pending, rewritten
        assert stale.encode() not in stored
        files = list(state.rglob("checkpoint-*.bin"))
        assert len(files) == 1
        assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    finally:
        gate.set()
    assert d.wait_idle(10)
    assert ex.headers["authorization"] == "Bearer fresh"
    assert d.retraining_counts() == {("fraud", "http"): 1}


def test_the_outbox_refuses_a_request_that_carries_credentials(tmp_path: Path) -> None:
    box = Outbox(DirectoryStore(tmp_path))
    req = json_request("http://h", {}, headers={"authorization": "Bearer x"})
    with pytest.raises(ValueError, match="carries authorization"):
        box.put(Notification("msg_a", "ops", req, 0.0))
    assert not tmp_path.joinpath("alerts").exists()
