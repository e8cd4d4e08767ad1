"""The HTTP server against real clients: routes, HEAD, 405, OpenMetrics, the /metrics
snapshot, and a slowloris flood of half-open connections.

The server is the real one over a real (idle) service; no broker is needed: nothing is
consumed, the endpoints only read the service's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from idle_service import idle_service
from prometheus_client import Counter, Gauge
from prometheus_client.metrics_core import Metric

from consumers import web_view
from consumers.http import HttpServer
from consumers.service import Service

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
ROUTES = [
    "/metrics",
    "/healthz",
    "/readyz",
    "/api/v1/models",
    "/api/v1/models/fraud",
    "/api/v1/models/nope",
    "/api/v1/alerts",
    "/",
    "/assets/view.js",
    "/assets/nope.js",
    "/elsewhere",
]


@pytest.fixture
def service(tmp_path: Path) -> Service:
    return idle_service(tmp_path)


@contextlib.contextmanager
def serving(service: Service, **settings: float) -> Iterator[HttpServer]:
    server = HttpServer("127.0.0.1", 0, service.registry, service, **settings)  # type: ignore[arg-type]
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_port_zero_is_a_free_port_reported_after_start(service: Service) -> None:
    with serving(service) as server:
        assert server.port > 0
        with socket.create_connection(("127.0.0.1", server.port), timeout=5):
            pass


def test_routes_answer_as_before(service: Service) -> None:
    with serving(service) as server, httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as c:
        r = c.get("/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert b"driftline_events_total" in r.content or b"driftline_build_info" in r.content
        r = c.get("/healthz")
        assert (r.status_code, r.text) == (200, "ok\n")
        r = c.get("/readyz")  # never assigned a partition: not ready
        assert r.status_code == 503
        assert r.json()["ready"] is False
        assert r.json()["reasons"]
        r = c.get("/api/v1/models/")  # a trailing slash is the same route
        assert [m["model"] for m in r.json()["models"]] == ["fraud"]
        r = c.get("/api/v1/models/fraud")
        assert (r.status_code, r.json()["model"]) == (200, "fraud")
        r = c.get("/api/v1/models/fraud?history_since=abc")
        assert (r.status_code, r.json()["error"]) == (
            400,
            "history_since: a finite number of epoch seconds",
        )
        r = c.get("/api/v1/models/a%2Fb%20c")  # URL-decoded
        assert (r.status_code, r.json()) == (404, {"error": "unknown model 'a/b c'"})
        r = c.get("/api/v1/alerts")
        assert (r.status_code, r.json()) == (200, {"alerts": []})
        r = c.get("/elsewhere?x=1")
        assert (r.status_code, r.json()) == (404, {"error": "not found", "path": "/elsewhere"})
        assert r.headers["content-type"] == "application/json"


def test_the_web_view_and_its_assets_are_served(service: Service) -> None:
    with serving(service) as server, httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as c:
        page = c.get("/")
        assert (page.status_code, page.headers["content-type"]) == (200, "text/html; charset=utf-8")
        assert page.headers["cache-control"] == "no-cache"
        for name, kind in web_view.ASSETS.items():
            r = c.get(f"/assets/{name}")
            assert (r.status_code, r.headers["content-type"]) == (200, kind), name
            assert r.content == web_view.asset(name)
            assert r.headers["cache-control"] == "max-age=3600"
        # every asset the page links is served; nothing else under /assets/ is
        linked = re.findall(r'(?:href|src)="(assets/[^"]+)"', page.text)
        assert len(linked) == 4
        assert all(c.get("/" + path).status_code == 200 for path in linked)
        assert c.get("/assets/index.html").status_code == 404
        assert c.get("/assets/../pyproject.toml").status_code == 404
        r = c.get("/api/v1/models/fraud")
        assert r.json()["history"] == []  # nothing evaluated yet


def test_head_has_the_headers_of_get_and_no_body(service: Service) -> None:
    with serving(service, metrics_max_age=60.0) as server:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        try:
            for path in ROUTES:
                conn.request("GET", path)
                get = conn.getresponse()
                body = get.read()
                # on the same connection: a body after HEAD would be read as the next response
                conn.request("HEAD", path)
                head = conn.getresponse()
                assert head.read() == b""
                assert head.status == get.status, path
                for name in ("content-type", "content-length"):
                    assert head.getheader(name) == get.getheader(name), (path, name)
                assert int(get.getheader("content-length") or -1) == len(body)
            conn.request("GET", "/healthz")  # the connection is still in step
            assert conn.getresponse().read() == b"ok\n"
        finally:
            conn.close()


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_405(service: Service, method: str) -> None:
    with serving(service) as server:
        r = httpx.request(method, f"http://127.0.0.1:{server.port}/metrics", timeout=5)
        assert r.status_code == 405
        assert r.headers["allow"] == "GET, HEAD"
        assert r.json()["error"] == "method not allowed"


def test_openmetrics_is_negotiated(service: Service) -> None:
    with serving(service) as server, httpx.Client(base_url=f"http://127.0.0.1:{server.port}") as c:
        om = c.get("/metrics", headers={"Accept": OPENMETRICS})
        assert om.headers["content-type"].startswith("application/openmetrics-text")
        assert om.content.endswith(b"# EOF\n")
        text = c.get("/metrics", headers={"Accept": "text/plain"})
        assert text.headers["content-type"].startswith("text/plain; version=0.0.4")
        assert not text.content.endswith(b"# EOF\n")


def test_metrics_come_from_a_snapshot_at_most_max_age_old(service: Service) -> None:
    probe = Counter("driftline_test_probe", "changed by the test", registry=service.registry)
    with serving(service, metrics_max_age=2.0) as server:
        url = f"http://127.0.0.1:{server.port}/metrics"
        first = httpx.get(url, timeout=5).content
        first_om = httpx.get(url, headers={"Accept": OPENMETRICS}, timeout=5).content
        assert b"driftline_test_probe_total 0.0" in first
        probe.inc()
        # within max_age: the same bytes, though the counter changed (each format its own)
        assert httpx.get(url, timeout=5).content == first
        assert httpx.get(url, headers={"Accept": OPENMETRICS}, timeout=5).content == first_om
        time.sleep(2.2)
        assert b"driftline_test_probe_total 1.0" in httpx.get(url, timeout=5).content
        assert (
            b"driftline_test_probe_total 1.0"
            in httpx.get(url, headers={"Accept": OPENMETRICS}, timeout=5).content
        )


def test_concurrent_scrapers_share_one_rendering(service: Service) -> None:
    with serving(service, metrics_max_age=60.0) as server:
        url = f"http://127.0.0.1:{server.port}/metrics"

        async def scrape_together(n: int) -> set[bytes]:
            limits = httpx.Limits(max_connections=n)
            async with httpx.AsyncClient(limits=limits, timeout=10) as client:
                responses = await asyncio.gather(*(client.get(url) for _ in range(n)))
            assert all(r.status_code == 200 for r in responses)
            return {r.content for r in responses}

        bodies = asyncio.run(scrape_together(40))
        assert len(bodies) == 1
        assert server.app.metrics.renders == 1


def _half_open(port: int, n: int) -> list[socket.socket]:
    """``n`` connections that each sent part of a request head and then nothing."""
    out = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: driftline\r\nX-Slow: ")
        out.append(s)
    return out


def _closed_by_server(s: socket.socket, timeout: float) -> bool:
    s.settimeout(timeout)
    try:
        return s.recv(1024) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_a_half_open_connection_is_closed_after_header_timeout(service: Service) -> None:
    with serving(service, header_timeout=1.5) as server:
        (s,) = _half_open(server.port, 1)
        try:
            start = time.monotonic()
            assert not _closed_by_server(s, 0.5)  # not at once
            assert _closed_by_server(s, 5.0)
            assert 1.0 < time.monotonic() - start < 5.0
            assert server.connections.timed_out == 1
        finally:
            s.close()


def test_slowloris_neither_blocks_metrics_nor_costs_threads(service: Service) -> None:
    threads_before = threading.active_count()
    with serving(service, max_connections=256, header_timeout=3.0) as server:
        sockets = _half_open(server.port, 1200)
        try:
            start = time.monotonic()
            r = httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=5)
            took = time.monotonic() - start
            assert r.status_code == 200, took
            # the server's threads: its event loop and a few workers, not one per connection
            assert threading.active_count() - threads_before < 10
            assert threading.active_count() < 30
            # at most max_connections open: the oldest half-open ones were evicted
            assert len(server.connections.open) <= 256
            assert server.connections.evicted >= 1200 - 256
            # and the ones left are closed by the header timeout
            deadline = time.monotonic() + 10
            while server.connections.open and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not server.connections.open
            assert server.connections.timed_out > 0
            assert all(_closed_by_server(s, 1.0) for s in sockets[-50:])
        finally:
            for s in sockets:
                s.close()


SCRAPE_LOOPS = """
import http.client, sys, threading, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
done = []
def loop():
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/metrics")
        conn.getresponse().read()
        conn.close()
        done.append(1)
threads = [threading.Thread(target=loop) for _ in range(20)]
for t in threads: t.start()
for t in threads: t.join()
print(len(done))
"""


def _cpu_seconds(thread: threading.Thread) -> float:
    stat = Path(f"/proc/self/task/{thread.native_id}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_greedy_scrapers_get_at_most_the_cpu_share(service: Service) -> None:
    with serving(service, cpu_share=0.1) as server:
        (loop_thread,) = [t for t in threading.enumerate() if t.name == "driftline-http"]
        before, start = _cpu_seconds(loop_thread), time.monotonic()
        child = subprocess.run(
            [sys.executable, "-c", SCRAPE_LOOPS, str(server.port), "4"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        share = (_cpu_seconds(loop_thread) - before) / (time.monotonic() - start)
        assert int(child.stdout) > 100  # served all along, only slower
        assert share < 0.16, share  # 0.1 and the tick's overshoot; unbounded it takes 0.3+
        assert server.cpu.slept > 0


def test_a_client_that_does_not_read_its_response_is_dropped(service: Service) -> None:
    # a /metrics of several MB, more than the socket buffers hold: the rest waits in the
    # server's buffer, which the header timeout frees
    big = Gauge("driftline_test_big", "many series", ["n"], registry=service.registry)
    for i in range(60_000):
        big.labels(n=f"series-number-{i:06d}").set(i)
    with serving(service, header_timeout=1.0) as server:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", server.port))
        try:
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: driftline\r\n\r\n")  # and never read
            deadline = time.monotonic() + 20
            while server.connections.timed_out == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert server.connections.timed_out == 1
            assert not server.connections.open
        finally:
            s.close()


class SlowCollector:
    """A collector that takes ``seconds`` to collect: a request that hangs."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def collect(self) -> Iterator[Metric]:
        time.sleep(self.seconds)
        yield from ()


def test_a_request_unanswered_past_the_response_timeout_is_dropped(service: Service) -> None:
    service.registry.register(SlowCollector(4.0))
    with serving(service, header_timeout=0.5, response_timeout=1.0) as server:
        start = time.monotonic()
        with pytest.raises(httpx.RemoteProtocolError):
            httpx.get(f"http://127.0.0.1:{server.port}/metrics", timeout=10)
        assert time.monotonic() - start < 3.5  # closed before the answer came
        assert server.connections.too_slow == 1
