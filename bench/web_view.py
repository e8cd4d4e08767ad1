"""The web view's size and cost, and /metrics with and without the page being polled.

A service (the model of bench/throughput.py: 20 numerical + 5 categorical features) is fed
``--events`` decoded events over ``--minutes`` of event time in 10 s panes, 60 s windows
(stage 1 hands its panes straight to stage 2), so that the model has a window, its
explanation and a history of evaluations. Then, in one run:

- the bytes of ``/`` and its assets (what a browser loads once), of the JSON the page
  reads first (models, the model with its whole history, alerts) and of each refresh
  after that (every 5 s; the history from the newest window held on);
- the time to explain every feature (done once per evaluation) and to answer the model's
  JSON (explanations held: the history, encoding), against a /metrics rendering of the
  same state, in process;
- /metrics latency over HTTP (``metrics_max_age`` 0: every scrape rendered) while nothing
  else talks to the server, then while ``--pollers`` loops in a child process make the
  page's refresh back to back (the load of many open pages).

Not a test.

    python bench/web_view.py [--events 200000] [--minutes 10] [--pollers 4]
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import msgspec
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import generate_latest
from throughput import bench_config, columns

from consumers import web_view
from consumers.http import HttpServer
from consumers.http_app import finite
from consumers.service import Service
from monitor.explain import explain

FIRST = ("/api/v1/models", "/api/v1/models/bench", "/api/v1/alerts")


def feed(service: Service, n: int, minutes: float, rng: np.random.Generator) -> None:
    cols = columns(rng, n)
    lists = {k: v.tolist() for k, v in cols.items()}
    t0 = float(int(time.time()) // 10 * 10 - minutes * 60 - 60)
    step = minutes * 60 / n
    encode = msgspec.json.encode
    batch = 5000
    for start in range(0, n, batch):
        values, times = [], []
        for i in range(start, min(n, start + batch)):
            t = t0 + i * step
            event = {
                "event_id": f"e{i}",
                "model": "bench",
                "timestamp": t,
                "features": {k: lists[k][i] for k in lists},
                "prediction": 0.5,
            }
            values.append(encode(event))
            times.append(t)
        now = times[-1] + 1.0
        service.handle(service.decoder.decode(values, times, now=now), now, 0)
    service.tick(times[-1] + 30.0)


def get(conn: http.client.HTTPConnection, path: str) -> bytes:
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    assert r.status == 200, (path, r.status)
    return body


def median_ms(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


def scrape_latencies(port: int, scrapes: int) -> list[float]:
    """Milliseconds of each of ``scrapes`` scrapes, one connection each (on a kept-alive
    connection, the response's two writes meet the client's delayed ACK: ~40 ms each)."""
    out = []
    for _ in range(scrapes):
        t = time.perf_counter()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        get(conn, "/metrics")
        conn.close()
        out.append((time.perf_counter() - t) * 1000)
    return out


POLLER = """
import http.client, sys, threading
port, loops = int(sys.argv[1]), int(sys.argv[2])
stop = threading.Event()
def run():
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while not stop.is_set():
        for path in sys.argv[3:]:
            c.request("GET", path); c.getresponse().read()
threads = [threading.Thread(target=run, daemon=True) for _ in range(loops)]
for t in threads: t.start()
print("polling", flush=True)
sys.stdin.read()
stop.set()
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--pollers", type=int, default=4)
    parser.add_argument("--scrapes", type=int, default=300)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        reference = Path(tmp) / "reference.csv"
        ref = columns(rng, 20_000)
        names = list(ref)
        rows = zip(*(ref[c].tolist() for c in names), strict=True)
        reference.write_text(
            "\n".join([",".join(names), *(",".join(map(str, r)) for r in rows)]) + "\n"
        )
        config = bench_config("127.0.0.1:9", "bench", reference, "bench-web")
        service = Service(config)
        t = time.perf_counter()
        feed(service, args.events, args.minutes, rng)
        fed = time.perf_counter() - t
        ev = service.evaluation("bench")
        assert ev is not None
        history = service.owner.history("bench")
        print(
            f"fed {args.events} events over {args.minutes:g} min in {fed:.1f}s: "
            f"{len(ev.features)} features, window of {ev.window_events} events, "
            f"{len(history)} evaluations in the history"
        )

        server = HttpServer("127.0.0.1", 0, service.registry, service, metrics_max_age=0.0)
        server.start()
        try:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            page = len(get(conn, "/"))
            assets = {name: len(get(conn, f"/assets/{name}")) for name in web_view.ASSETS}
            linked = sum(n for name, n in assets.items() if not name.endswith("LICENSE"))
            first = {path: len(get(conn, path)) for path in FIRST}
            since = history[-1]["window_end"]
            steady = ("/api/v1/models", f"/api/v1/models/bench?history_since={since!r}", FIRST[2])
            refresh = {path: len(get(conn, path)) for path in steady}
            conn.close()
            print(f"page: / {page} B + assets {linked} B = {page + linked} B, loaded once")
            print("  " + ", ".join(f"{k} {v} B" for k, v in assets.items()))
            for name, sizes in (("first read", first), ("each refresh (5 s)", refresh)):
                shown = ", ".join(f"{k} {v} B" for k, v in sizes.items())
                print(f"{name}: {sum(sizes.values())} B ({shown})")

            def explain_all() -> None:
                for f in ev.features:
                    assert f.profile is not None
                    assert f.window_counts is not None
                    assert f.window_sums is not None
                    explain(f.profile, f.method, f.window_counts, f.window_sums)

            def answer(since: float | None) -> None:
                json.dumps(finite(service.model_json("bench", since)), allow_nan=False)

            render_ms = median_ms(lambda: generate_latest(service.registry), 30)
            costs = {
                "explain every feature (once per evaluation)": median_ms(explain_all, 30),
                "answer the first read": median_ms(lambda: answer(None), 30),
                "answer a refresh": median_ms(lambda: answer(since), 30),
            }
            print(f"render /metrics: {render_ms:.2f} ms (median of 30, as below)")
            for name, ms in costs.items():
                print(f"{name}: {ms:.2f} ms, {ms / render_ms:.2f} x a /metrics rendering")

            scrape_latencies(server.port, 20)  # warm up
            quiet = scrape_latencies(server.port, args.scrapes)
            poller = subprocess.Popen(
                [sys.executable, "-c", POLLER, str(server.port), str(args.pollers), *steady],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert poller.stdout is not None
            assert poller.stdin is not None
            poller.stdout.readline()
            time.sleep(0.5)
            polled = scrape_latencies(server.port, args.scrapes)
            poller.stdin.close()
            poller.wait(30)
        finally:
            server.stop()
        for name, lat in (("quiet", quiet), (f"{args.pollers} pollers", polled)):
            q = statistics.quantiles(lat, n=100)
            print(
                f"/metrics over HTTP, {name}: median {statistics.median(lat):.2f} ms, "
                f"p99 {q[98]:.2f} ms ({args.scrapes} scrapes)"
            )
        ratio = statistics.median(polled) / statistics.median(quiet)
        print(f"scrape median with the page polled / quiet: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
