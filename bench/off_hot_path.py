"""What scrapes and evaluations cost the consume rate.

Produces N prediction events (as bench/throughput.py: 20 numerical + 5 categorical
features, 4 partitions, event times 1 ms apart) to the embedded broker, then, in one run
and alternating, lets a fresh service consume them all in each mode. The rate is taken
from the moment stage 2 (which evaluates) holds its partition to the last event counted,
so that evaluations run all along what is measured (stage 2's group join takes a few
seconds on the embedded broker: N must be large enough for stage 1 to be still
consuming then).

- ``bare``: panes of 1 h, so no pane closes and stage 2 evaluates nothing; no HTTP;
- ``panes``: panes of 1 s in a 60 s window: a pane closes every 1,000 events, stage 1
  publishes it and stage 2 merges it, but the evaluation is skipped;
- ``evaluations``: the same with stage 2 evaluating the model (25 features) as it does;
- ``scraper``: ``bare`` with the HTTP server and one Prometheus-like scraper fetching
  /metrics every 100 ms (from a child process, so its own CPU is not the service's);
- ``scraper+evaluations``: both.

Prints each mode's rate, the evaluations and scrapes made, and the ratio to ``bare``.
Not a test.

    python bench/off_hot_path.py [--events 1000000] [--trials 3] [--client confluent]
"""

from __future__ import annotations

import argparse
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

MODES = ("bare", "panes", "evaluations", "scraper", "scraper+evaluations")
SCRAPE_INTERVAL = 0.1


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
    if mode.endswith(("panes", "evaluations")):
        windows = WindowSettings(pane=1.0, size=60.0, allowed_lateness=0.0)
    else:
        windows = WindowSettings(pane=3600.0, size=3600.0, allowed_lateness=0.0)
    config = config.model_copy(update={"windows": windows})
    service = Service(config)
    evaluations = [0]
    evaluate = service.owner._evaluate

    def counted_evaluate(*args: Any) -> None:
        evaluations[0] += 1
        if mode != "panes":
            evaluate(*args)

    service.owner._evaluate = counted_evaluate  # type: ignore[method-assign]
    server = child = None
    if mode.startswith("scraper"):
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
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    counted, deadline = 0, time.time() + 600
    start: tuple[float, int] | None = None
    while time.time() < deadline:
        counted = service.events_counted("bench")
        if counted >= n:
            break
        if start is None and loop.panes._consumer and loop.panes._consumer.assignment():
            start = (time.perf_counter(), counted)
            evaluations[0] = 0
        time.sleep(0.01)
    end = time.perf_counter()
    evaluated = evaluations[0]
    stop.set()
    thread.join(30)
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
    return {
        "rate": (counted - start[1]) / (end - start[0]),
        "measured": counted - start[1],
        "complete": counted >= n,
        "evaluations": evaluated,
        "scrapes": scrapes,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--client", choices=("kafka-python", "confluent"), default="confluent")
    parser.add_argument("--scrape", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.scrape is not None:
        return scrape(args.scrape)
    rng = np.random.default_rng(0)
    results: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    with tempfile.TemporaryDirectory() as tmp, EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        topic = f"bench-hot-{uuid.uuid4().hex[:8]}"
        ensure_topics(bootstrap, [topic], partitions=4)
        ensure_topics(bootstrap, [topic + ".dlq"])
        ref = Path(tmp) / "reference.csv"
        cols = columns(rng, 20_000)
        rows = zip(*(cols[c].tolist() for c in cols), strict=True)
        ref.write_text(",".join(cols) + "\n" + "\n".join(",".join(map(str, r)) for r in rows))
        produce(bootstrap, topic, args.events, rng)
        print(
            f"events: {args.events} (20 numerical + 5 categorical features, 4 partitions); "
            f"kafka.client: {args.client}; {args.trials} alternating trials"
        )
        for trial in range(1, args.trials + 1):
            for mode in MODES:
                r = run(mode, bootstrap, topic, args.events, ref, args.client)
                results[mode].append(r)
                print(
                    f"trial {trial}: {mode:<20} {r['rate']:>9,.0f} events/s "
                    f"(over {r['measured']:,})  "
                    f"evaluations {r['evaluations']:>4}  scrapes {r['scrapes']:>4}",
                    flush=True,
                )
    bare = [r["rate"] for r in results["bare"]]
    for mode in MODES:
        rates = [r["rate"] for r in results[mode]]
        ratios = [a / b for a, b in zip(rates, bare, strict=True)]
        print(
            f"median {mode:<20} {float(np.median(rates)):>9,.0f} events/s, of bare: median "
            f"{float(np.median(ratios)):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})"
        )
    return 0 if all(r["complete"] for rs in results.values() for r in rs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
