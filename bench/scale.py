"""Scale-out: aggregate throughput of 1 and 2 ``driftline run`` instances on one broker.

Produces N prediction events (20 numerical + 5 categorical features) to a 4-partition
topic, then, in one run and alternating, lets a fresh group of 1 and of 2 instances
(separate processes) consume it all. Each run's rate is N over the time from the first
event counted (summed over the instances' ``driftline_events_total``) to the last. Also
prints the bytes the instances wrote to the panes topic per input byte. Not a test.

    python bench/scale.py [--events 200000] [--trials 2]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
from kafka import KafkaConsumer
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from throughput import LOW_TIMEOUTS, columns, produce

from consumers.broker import EmbeddedBroker
from consumers.topics import ensure_topics

PARTITIONS = 4
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def counted(port: int) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return 0.0
    return sum(
        s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "driftline_events_total" and s.labels.get("kind") == "prediction"
    )


def run_group(
    instances: int, bootstrap: str, topic: str, panes: str, n: int, ref: Path, tmp: Path
) -> tuple[float, str]:
    """Events per second of a fresh group of ``instances``; returns it and the group id."""
    group = f"bench-scale-{uuid.uuid4().hex[:8]}"
    ports = [free_port() for _ in range(instances)]
    procs = []
    for i, port in enumerate(ports):
        cfg = tmp / f"{group}-{i}.yaml"
        cfg.write_text(
            f"""
kafka:
  bootstrap_servers: "{bootstrap}"
  group_id: {group}
  predictions_topic: {topic}
  dead_letter_topic: {topic}.dlq
  panes_topic: {panes}
  poll_timeout_ms: 200
  consumer: {LOW_TIMEOUTS}
http: {{host: 127.0.0.1, port: {port}}}
windows: {{pane: 10s, size: 60s, allowed_lateness: 1s}}
state: {{dir: "{tmp / group}", checkpoint_interval: 5s}}
models:
  - name: bench
    reference: {{path: "{ref}"}}
"""
        )
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "consumers.cli", "run", "--config", str(cfg)],
                cwd=tmp,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env={**os.environ, "PYTHONPATH": str(ROOT)},
            )
        )
    try:
        first = None
        deadline = time.time() + 900
        while time.time() < deadline:
            total = sum(counted(p) for p in ports)
            now = time.perf_counter()
            if first is None and total > 0:
                first = (now, total)
            if total >= n:
                assert first is not None
                return (n - first[1]) / (now - first[0]), group
            time.sleep(0.05)
        raise RuntimeError("instances did not count every event")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(30)


def panes_bytes(bootstrap: str, panes: str) -> int:
    consumer = KafkaConsumer(
        panes,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=3000,
    )
    size = sum(len(r.value) + len(r.key or b"") for r in consumer)
    consumer.close()
    return size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--trials", type=int, default=2)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmpdir, EmbeddedBroker() as broker:
        tmp = Path(tmpdir)
        bootstrap = broker.bootstrap_servers
        topic = f"bench-{uuid.uuid4().hex[:8]}"
        ensure_topics(bootstrap, [topic], partitions=PARTITIONS)
        ensure_topics(bootstrap, [topic + ".dlq"])
        ref = tmp / "reference.csv"
        cols = columns(rng, 20_000)
        names = list(cols)
        rows = zip(*(cols[c].tolist() for c in names), strict=True)
        ref.write_text(",".join(names) + "\n" + "\n".join(",".join(map(str, r)) for r in rows))
        produce(bootstrap, topic, args.events, rng)
        input_bytes = panes_bytes(bootstrap, topic)
        print(
            f"events: {args.events} ({input_bytes / args.events:.0f} bytes each, 20 numerical + "
            f"5 categorical features) on {PARTITIONS} partitions; 2 cores"
        )
        one, two = [], []
        for trial in range(1, args.trials + 1):
            panes = f"{topic}.panes-{trial}"
            ensure_topics(bootstrap, [panes], partitions=PARTITIONS)
            rate1, _ = run_group(1, bootstrap, topic, panes, args.events, ref, tmp)
            rate2, _ = run_group(2, bootstrap, topic, panes, args.events, ref, tmp)
            one.append(rate1)
            two.append(rate2)
            written = panes_bytes(bootstrap, panes)
            print(
                f"trial {trial}: 1 instance {rate1:>9,.0f} events/s   2 instances "
                f"{rate2:>9,.0f} events/s   ratio {rate2 / rate1:.2f}   panes topic "
                f"{written / (2 * input_bytes):.4f} bytes per input byte"
            )
    ratios = [b / a for a, b in zip(one, two, strict=True)]
    print(
        f"aggregate throughput 2 / 1 instances: median {float(np.median(ratios)):.2f} "
        f"(min {min(ratios):.2f}, max {max(ratios):.2f})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
