"""What scrapes and evaluations cost the consume rate, at live settings made stressful.

Produces N prediction events (as bench/throughput.py: 20 numerical + 5 categorical
features, 4 partitions) whose event times advance one second per ``--events-per-second``
events (default 100,000, about the rate one instance consumes): consumed live, event time
then runs about as fast as the wall clock. In one run, alternating, a fresh service
consumes them all in each mode. The rate is taken from the moment stage 1 has counted
events and stage 2 (which evaluates) holds its partition, to the last event counted, so
that evaluations run all along what is measured (stage 2's group join takes a few seconds
on the embedded broker).

- ``bare``: panes of 1 h, so no pane closes and stage 2 evaluates nothing; no HTTP;
- ``evaluations``: panes of 1 s in a window of 60 panes (the default window is 60 panes of
  60 s): a pane closes about every second, 60 times the default, and stage 2 merges and
  evaluates the model (25 features) on each;
- ``scraper``: ``bare`` with the HTTP server and one Prometheus-like scraper fetching
  /metrics every second (from a child process, so its own CPU is not the service's):
  15 times the shipped scrape interval (15 s), 60 times Prometheus' default (1 min);
- ``both``: ``evaluations`` and ``scraper`` together;
- ``catch-up``: ``evaluations`` with panes of 10 ms: a backlog replayed at full speed
  closes about 100 panes a second, far from live settings but what a restart after
  downtime does.

Prints each mode's rate, the pane records sent and evaluations made per second, the
scrapes, the service process's CPU time per event (all its threads; the scraper's process
is not counted), and the ratios to ``bare`` of the same trial. Not a test.

    python bench/off_hot_path.py [--events 1000000] [--trials 3] [--client confluent]
"""

from __future__ import annotations

import argparse
import gc
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import bench_config, columns, produce

from consumers.broker import EmbeddedBroker
from consumers.http import HttpServer
from consumers.loop import ConsumerLoop
from consumers.service import Service
from consumers.topics import ensure_topics
from monitor.config import WindowSettings

MODES = ("bare", "evaluations", "scraper", "both", "catch-up")
SCRAPE_INTERVAL = 1.0
#: pane length per mode (seconds of event time); the window is 60 panes
PANES = {"bare": 3600.0, "scraper": 3600.0, "evaluations": 1.0, "both": 1.0, "catch-up": 0.01}


def scrape(port: int) -> int:
    """The child: fetch /metrics every ``SCRAPE_INTERVAL`` until stdin closes; print
    the number of scrapes."""
    done = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
    print("ready", flush=True)
    scrapes = 0
    while not done.wait(SCRAPE_INTERVAL):
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            r.read()
        scrapes += 1
    print(scrapes, flush=True)
    return 0


def run(mode: str, bootstrap: str, topic: str, n: int, ref: Path, client: str) -> dict[str, Any]:
    config = bench_config(bootstrap, topic, ref, "bench-hot-path", client)
    pane = PANES[mode]
    windows = WindowSettings(pane=pane, size=60 * pane, allowed_lateness=0.0)
    config = config.model_copy(update={"windows": windows})
    service = Service(config)
    evaluations = [0]
    evaluate = service.owner._evaluate

    def counted_evaluate(*args: Any) -> None:
        evaluations[0] += 1
        evaluate(*args)

    service.owner._evaluate = counted_evaluate  # type: ignore[method-assign]
    server = child = None
    if mode in ("scraper", "both"):
        server = HttpServer("127.0.0.1", 0, service.registry, service)
        server.start()
        child = subprocess.Popen(
            [sys.executable, __file__, "--scrape", str(server.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
    stop = threading.Event()
    loop = ConsumerLoop(service, config.kafka)
    published = [0]
    publish = loop._publish

    def counted_publish(updates: Any) -> None:
        updates = list(updates)
        published[0] += sum(len(u.panes) for u in updates)
        publish(updates)

    loop._publish = counted_publish  # type: ignore[method-assign]
    gc.freeze()  # as `driftline run` does before consuming
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    counted, deadline = 0, time.time() + 600
    start: tuple[float, int] | None = None
    cpu_start = 0.0
    while time.time() < deadline:
        counted = service.events_counted("bench")
        if counted >= n:
            break
        stage2 = loop.panes._consumer
        if start is None and counted and stage2 and stage2.assignment():
            # read again: asking for the assignment can wait while stage 2 joins its group
            start = (time.perf_counter(), service.events_counted("bench"))
            cpu_start = time.process_time()
            evaluations[0] = published[0] = 0
        time.sleep(0.01)
    end, cpu_end = time.perf_counter(), time.process_time()
    evaluated, panes = evaluations[0], published[0]
    stop.set()
    thread.join(30)
    gc.unfreeze()
    scrapes = 0
    if child is not None and server is not None:
        assert child.stdin is not None
        assert child.stdout is not None
        child.stdin.close()
        scrapes = int(child.stdout.read().strip() or 0)
        child.wait(30)
        server.stop()
    if start is None or start[1] > n * 0.8:
        raise SystemExit(f"stage 1 was nearly done before stage 2 joined: raise --events ({n})")
    seconds = end - start[0]
    return {
        "rate": (counted - start[1]) / seconds,
        "measured": counted - start[1],
        "complete": counted >= n,
        # pane records published (one per partition and pane, heartbeats included)
        "panes_per_s": panes / seconds,
        "evaluations_per_s": evaluated / seconds,
        "scrapes": scrapes,
        # the service process's CPU (every thread: both stages, the Kafka client's, HTTP)
        # per event counted: less at the mercy of other work on the machine than the rate
        "cpu_us": (cpu_end - cpu_start) / max(counted - start[1], 1) * 1e6,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--events-per-second", type=float, default=100_000.0)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--client", choices=("kafka-python", "confluent"), default="confluent")
    parser.add_argument("--only", nargs="*", choices=MODES, default=list(MODES))
    parser.add_argument("--scrape", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scrape is not None:
        return scrape(args.scrape)
    modes = ["bare", *(m for m in args.only if m != "bare")]
    rng = np.random.default_rng(0)
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in modes}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        topic = f"bench-hot-{uuid.uuid4().hex[:8]}"
        ensure_topics(bootstrap, [topic], partitions=4)
        ensure_topics(bootstrap, [topic + ".dlq"])
        ref = Path(tmp) / "reference.csv"
        cols = columns(rng, 20_000)
        rows = zip(*(cols[c].tolist() for c in cols), strict=True)
        ref.write_text(",".join(cols) + "\n" + "\n".join(",".join(map(str, r)) for r in rows))
        produce(bootstrap, topic, args.events, rng, spacing=1.0 / args.events_per_second)
        print(
            f"events: {args.events} (20 numerical + 5 categorical features, 4 partitions, "
            f"{args.events_per_second:,.0f} per second of event time); "
            f"kafka.client: {args.client}; {args.trials} alternating trials"
        )
        for trial in range(1, args.trials + 1):
            for mode in modes:
                r = run(mode, bootstrap, topic, args.events, ref, args.client)
                results[mode].append(r)
                print(
                    f"trial {trial}: {mode:<12} {r['rate']:>9,.0f} events/s "
                    f"(over {r['measured']:,}), per second: panes sent "
                    f"{r['panes_per_s']:>5.1f}, evaluations {r['evaluations_per_s']:>5.1f}; "
                    f"scrapes {r['scrapes']:>3}; CPU {r['cpu_us']:.2f} µs/event",
                    flush=True,
                )
    bare = [r["rate"] for r in results["bare"]]
    bare_cpu = [r["cpu_us"] for r in results["bare"]]
    for mode in modes:
        rates = [r["rate"] for r in results[mode]]
        ratios = [a / b for a, b in zip(rates, bare, strict=True)]
        cpu = [r["cpu_us"] for r in results[mode]]
        more = [c / b - 1.0 for c, b in zip(cpu, bare_cpu, strict=True)]
        print(
            f"median {mode:<12} {float(np.median(rates)):>9,.0f} events/s, of bare: median "
            f"{float(np.median(ratios)):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f}); "
            f"CPU per event {float(np.median(cpu)):.2f} µs, {float(np.median(more)):+.1%} "
            f"on bare ({min(more):+.1%} to {max(more):+.1%})"
        )
    return 0 if all(r["complete"] for rs in results.values() for r in rs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
