"""HTTP load against a consuming service: scrapers and a slowloris flood.

Produces N prediction events (20 numerical + 5 categorical features, as bench/throughput.py)
to the embedded broker, then, in one run and alternating, lets a fresh service with its
HTTP server consume them all (events per second from the first record decoded to the
last) while:

- ``quiet``: nothing talks to the HTTP server;
- ``scrapers``: 20 loops scrape /metrics back to back (``http.metrics_max_age`` 1 s);
- ``scrapers-uncached``: the same with ``metrics_max_age`` 0, every scrape rendered, as
  before the snapshot;
- ``slowloris``: 3000 half-open connections (partial request heads, re-opened as soon as
  the server closes them) while /metrics is fetched every 0.2 s; its median and worst
  latency, the server process's threads and open file descriptors are reported.

The scrapers and the attacker run in a child process (``--load``), so only the server's
side of the work is in the measured process. Not a test.

    python bench/http_load.py [--events 200000] [--trials 2]
"""

from __future__ import annotations

import argparse
import http.client
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from throughput import bench_config, columns, produce

from consumers.broker import EmbeddedBroker
from consumers.http import HttpServer
from consumers.loop import ConsumerLoop
from consumers.service import Service
from consumers.topics import ensure_topics

SCRAPERS = 20
HALF_OPEN = 3000
MODES = (
    "quiet",
    "scrapers",
    "scrapers-uncached",
    "scrapers-elsewhere",
    "paced-scrapers",
    "slowloris",
    "slowloris-reopen",
)
PACED_INTERVAL = 0.1  # seconds between two scrapes of one paced loop


# -- the child process: scrapers or attacker ----------------------------------------------

finished = threading.Event()  # the parent closed our stdin: stop


def _watch_stdin() -> None:
    sys.stdin.read()
    finished.set()


def scrape_loops(port: int, loops: int, stop_after: float, interval: float = 0.0) -> None:
    """``loops`` threads scraping /metrics, each every ``interval`` seconds (0: back to
    back); prints the scrapes made."""
    done = [0] * loops

    def loop(i: int) -> None:
        end = time.monotonic() + stop_after
        while time.monotonic() < end and not finished.wait(interval):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", "/metrics")
                conn.getresponse().read()
                done[i] += 1
            except OSError:
                time.sleep(0.01)
            finally:
                conn.close()

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(loops)]
    for t in threads:
        t.start()
    print("ready", flush=True)
    finished.wait(stop_after)
    print(f"scrapes {sum(done)}", flush=True)


def slowloris(port: int, connections: int, stop_after: float, reopen: bool) -> None:
    """Opens ``connections`` half-open connections and holds them; with ``reopen``, opens
    a new one as soon as the server closes one."""
    selector = selectors.DefaultSelector()
    opened = 0

    def open_one() -> None:
        nonlocal opened
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: driftline\r\nX-Slow: ")
        except OSError:
            return
        s.setblocking(False)
        selector.register(s, selectors.EVENT_READ)
        opened += 1

    for _ in range(connections):
        open_one()
    print("ready", flush=True)
    end = time.monotonic() + stop_after
    while time.monotonic() < end and not finished.is_set():
        for key, _ in selector.select(0.2):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:
                selector.unregister(s)
                s.close()
                if reopen:
                    open_one()
        if reopen and len(selector.get_map()) < connections:
            open_one()
    print(f"opened {opened}", flush=True)


# -- the measured process ------------------------------------------------------------------


def thread_cpu(prefix: str) -> float:
    """CPU seconds used so far by this process's threads whose name starts with ``prefix``."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for t in threading.enumerate():
        if t.name.startswith(prefix) and t.native_id is not None:
            try:
                stat = Path(f"/proc/self/task/{t.native_id}/stat").read_text()
            except OSError:
                continue
            fields = stat.rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks  # utime, stime
    return total


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def os_threads() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return -1


def fetch_metrics(port: int) -> float:
    """Seconds to fetch /metrics on a new connection (inf when it fails)."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        response.read()
        ok = response.status == 200
    except OSError:
        ok = False
    finally:
        conn.close()
    return time.perf_counter() - start if ok else float("inf")


def run(mode: str, bootstrap: str, topic: str, n: int, reference: Path) -> dict[str, Any]:
    """Consume the topic with a fresh service under ``mode``'s HTTP load."""
    config = bench_config(bootstrap, topic, reference, "bench-http")
    service = Service(config)
    max_age = 0.0 if mode == "scrapers-uncached" else 1.0
    server = HttpServer("127.0.0.1", 0, service.registry, service, metrics_max_age=max_age)
    server.start()
    child = None
    if mode != "quiet":
        load = "scrapers" if mode == "scrapers-uncached" else mode
        child = subprocess.Popen(
            [sys.executable, __file__, "--load", load, "--port", str(server.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
    first: list[float] = []
    cpu_at_first: list[float] = []
    decode = service.decoder.decode

    def timed_decode(values: Any, times: Any, now: float | None = None) -> Any:
        if not first:
            first.append(time.perf_counter())
            cpu_at_first.extend((thread_cpu("driftline-http"), thread_cpu("bench-consumer")))
        return decode(values, times, now=now)

    service.decoder.decode = timed_decode  # type: ignore[method-assign]
    stop = threading.Event()
    loop = ConsumerLoop(service, config.kafka)
    thread = threading.Thread(target=loop.run, args=(stop,), name="bench-consumer", daemon=True)
    thread.start()
    latencies: list[float] = []
    threads, fds = os_threads(), open_fds()
    counted, deadline = 0, time.time() + 600
    next_fetch = time.monotonic()
    while time.time() < deadline:
        counted = service.events_counted("bench")
        if counted >= n:
            break
        if time.monotonic() >= next_fetch:
            if mode.startswith("slowloris"):
                latencies.append(fetch_metrics(server.port))
            threads, fds = max(threads, os_threads()), max(fds, open_fds())
            next_fetch = time.monotonic() + 0.2
        time.sleep(0.01)
    end = time.perf_counter()
    http_cpu = thread_cpu("driftline-http") - cpu_at_first[0]
    consumer_cpu = thread_cpu("bench-consumer") - cpu_at_first[1]
    stop.set()
    thread.join(30)
    out: dict[str, Any] = {
        "rate": counted / (end - first[0]),
        "complete": counted >= n,
        # CPU of the HTTP threads (event loop, workers) and of the consumer, per second
        "http_cpu": http_cpu / (end - first[0]),
        "consumer_cpu": consumer_cpu / (end - first[0]),
    }
    if child is not None:
        assert child.stdin is not None
        assert child.stdout is not None
        child.stdin.close()
        out["child"] = child.stdout.read().strip()
        child.wait(30)
    out["renders"] = server.app.metrics.renders
    out["evicted"] = server.connections.evicted
    out["timed_out"] = server.connections.timed_out
    if latencies:
        out["latency_median"] = statistics.median(latencies)
        out["latency_max"] = max(latencies)
        out["fetches"] = len(latencies)
    out["threads"], out["fds"] = threads, fds
    server.stop()
    return out


def describe(mode: str, r: dict[str, Any]) -> str:
    line = (
        f"{mode:<18} {r['rate']:>7,.0f} events/s, CPU s/s: consumer {r['consumer_cpu']:.2f} "
        f"HTTP {r['http_cpu']:.2f}; threads {r['threads']}, fds {r['fds']}"
    )
    if "scrapers" in mode:
        line += f"   {r['child']} by {SCRAPERS} loops, {r['renders']} renderings"
    if mode.startswith("slowloris"):
        failed = r["latency_max"] == float("inf")
        line += (
            f"   /metrics median {r['latency_median'] * 1000:.1f} ms, "
            f"max {r['latency_max'] * 1000:.1f} ms over {r['fetches']} fetches"
            f"{' (some failed)' if failed else ''}; evicted {r['evicted']}, "
            f"timed out {r['timed_out']}"
        )
    return line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--trials", type=int, default=2, help="alternating runs of each mode")
    parser.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated, from: %(default)s"
    )
    parser.add_argument("--load", choices=MODES[1:], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load is not None:
        threading.Thread(target=_watch_stdin, daemon=True).start()
    if args.load == "scrapers":
        scrape_loops(args.port, SCRAPERS, stop_after=600)
        return 0
    if args.load == "scrapers-elsewhere":
        from prometheus_client import REGISTRY

        class NoApi:
            def readiness(self) -> tuple[bool, list[str]]:
                return True, []

        elsewhere = HttpServer("127.0.0.1", 0, REGISTRY, NoApi())  # type: ignore[arg-type]
        elsewhere.start()
        scrape_loops(elsewhere.port, SCRAPERS, stop_after=600)
        return 0
    if args.load == "slowloris":
        slowloris(args.port, HALF_OPEN, stop_after=600, reopen=False)
        return 0
    if args.load == "slowloris-reopen":
        slowloris(args.port, HALF_OPEN, stop_after=600, reopen=True)
        return 0
    if args.load == "paced-scrapers":
        scrape_loops(args.port, SCRAPERS, stop_after=600, interval=PACED_INTERVAL)
        return 0
    modes = [m for m in args.modes.split(",") if m]
    if unknown := set(modes) - set(MODES):
        parser.error(f"unknown modes {sorted(unknown)}; known: {', '.join(MODES)}")
    rng = np.random.default_rng(0)
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp:
        broker = EmbeddedBroker()
        broker.start()
        try:
            bootstrap = broker.bootstrap_servers
            topic = f"bench-http-{uuid.uuid4().hex[:8]}"
            ensure_topics(bootstrap, [topic, topic + ".dlq"])
            ref = Path(tmp) / "reference.csv"
            cols = columns(rng, 20_000)
            rows = zip(*(cols[c].tolist() for c in cols), strict=True)
            ref.write_text(",".join(cols) + "\n" + "\n".join(",".join(map(str, r)) for r in rows))
            produce_s = produce(bootstrap, topic, args.events, rng)
            print(
                f"events: {args.events} (20 numerical + 5 categorical features), produced in "
                f"{produce_s:.1f}s; {args.trials} alternating trials of {', '.join(modes)}"
            )
            for trial in range(1, args.trials + 1):
                for mode in modes:
                    r = run(mode, bootstrap, topic, args.events, ref)
                    results[mode].append(r)
                    print(f"trial {trial}: {describe(mode, r)}", flush=True)
        finally:
            broker.stop()
    quiet = float(np.median([r["rate"] for r in results.get("quiet") or results[modes[0]]]))
    for mode in modes:
        rate = float(np.median([r["rate"] for r in results[mode]]))
        http_cpu = float(np.median([r["http_cpu"] for r in results[mode]]))
        print(
            f"median {mode}: {rate:,.0f} events/s ({rate / quiet:.2f} of quiet), "
            f"HTTP threads {http_cpu:.3f} CPU s/s"
        )
    return 0 if all(r["complete"] for rs in results.values() for r in rs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
