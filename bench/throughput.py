"""End-to-end throughput: each Kafka client raw vs driftline on it, on the same broker.

Produces N prediction events (20 numerical + 5 categorical features) to a fresh topic of
4 partitions, then, in one run of alternating trials, measures (a) plain kafka-python
consuming the topic, (b) plain confluent-kafka, (c) driftline's service consuming it
(decode + windows + panes to stage 2) with ``kafka.client: kafka-python`` and (d) with
``kafka.client: confluent``, each from its first record to its last, and prints the
rates and the ratios. Not a test: run it with ``make bench``.

    python bench/throughput.py [--events 200000] [--trials 3] [--bootstrap-servers H:P]
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from kafka import KafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parent))

from raw_consume import raw_confluent_rate, raw_consume_rate

from consumers.broker import EmbeddedBroker
from consumers.loop import ConsumerLoop
from consumers.service import Service
from consumers.topics import ensure_topics
from monitor.config import DriftlineConfig

NUM = [f"num_{i}" for i in range(20)]
CAT = [f"cat_{i}" for i in range(5)]
LOW_TIMEOUTS = {
    "max_poll_interval_ms": 3000,
    "session_timeout_ms": 3000,
    "heartbeat_interval_ms": 500,
}


def columns(rng: np.random.Generator, n: int) -> dict[str, Any]:
    cols: dict[str, Any] = {name: rng.normal(i * 0.1, 1.0, n) for i, name in enumerate(NUM)}
    cats = np.array([f"v{j}" for j in range(12)], dtype=object)
    cols.update({name: rng.choice(cats, n) for name in CAT})
    return cols


def produce(
    bootstrap: str, topic: str, n: int, rng: np.random.Generator, spacing: float = 0.001
) -> float:
    """N events, ``spacing`` seconds apart in event time, ending an hour ago."""
    cols = columns(rng, n)
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, batch_size=512 * 1024, acks=1
    )
    t0 = float(int(time.time()) - 3600) - n * spacing  # within validation's accepted range
    start = time.perf_counter()
    lists = {k: v.tolist() for k, v in cols.items()}
    for i in range(n):
        event = {
            "event_id": f"e{i}",
            "model": "bench",
            "model_version": "v1",
            "timestamp": t0 + i * spacing,
            "features": {k: lists[k][i] for k in lists},
            "prediction": 0.5,
            "latency_ms": 3.0,
        }
        producer.send(topic, key=event["event_id"].encode(), value=msgspec.json.encode(event))
    producer.flush()
    producer.close()
    return time.perf_counter() - start


def bench_config(
    bootstrap: str, topic: str, reference: Path, group: str, client: str = "kafka-python"
) -> DriftlineConfig:
    """The benchmarks' service: model ``bench`` on ``topic``, a fresh group named ``group-*``."""
    return DriftlineConfig.model_validate(
        {
            "kafka": {
                "bootstrap_servers": bootstrap,
                "client": client,
                "group_id": f"{group}-{uuid.uuid4().hex[:8]}",
                "predictions_topic": topic,
                "dead_letter_topic": topic + ".dlq",
                "consumer": LOW_TIMEOUTS,
                "poll_timeout_ms": 200,
            },
            "windows": {"pane": "10s", "size": "60s", "allowed_lateness": "1s"},
            "models": [{"name": "bench", "reference": {"path": str(reference)}}],
        }
    )


def driftline_rate(
    bootstrap: str,
    topic: str,
    n: int,
    reference: Path,
    client: str = "kafka-python",
    cpu: dict[str, float] | None = None,
) -> tuple[int, float]:
    """(events counted, seconds from the first record decoded to the last counted); with
    ``cpu``, fills it with stage 1's thread CPU seconds over that time: ``total``,
    ``decode`` and ``count`` (partition state, panes, label join)."""
    config = bench_config(bootstrap, topic, reference, "bench-driftline", client)
    service = Service(config)
    first: list[float] = []
    clock: list[int] = []
    spent = {"total": 0.0, "decode": 0.0, "count": 0.0}
    decode, handle = service.decoder.decode, service.handle

    def timed_decode(values: Any, times: Any, now: float | None = None) -> Any:
        if not first:
            first.append(time.perf_counter())
            clock.append(time.pthread_getcpuclockid(threading.get_ident()))
            spent["total"] = -time.thread_time()
        start = time.thread_time()
        try:
            return decode(values, times, now=now)
        finally:
            spent["decode"] += time.thread_time() - start

    def timed_handle(*args: Any) -> Any:
        start = time.thread_time()
        try:
            return handle(*args)
        finally:
            spent["count"] += time.thread_time() - start

    service.decoder.decode = timed_decode  # type: ignore[method-assign]
    service.handle = timed_handle  # type: ignore[method-assign]
    stop = threading.Event()
    loop = ConsumerLoop(service, config.kafka)
    gc.freeze()  # as `driftline run` does before consuming
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    counted, deadline = 0, time.time() + 600
    while time.time() < deadline:
        counted = service.events_counted("bench")
        if counted >= n:
            break
        time.sleep(0.01)
    end = time.perf_counter()
    if clock:
        spent["total"] += time.clock_gettime(clock[0])
    stop.set()
    thread.join(30)
    gc.unfreeze()  # this trial's service may go
    if cpu is not None:
        cpu.update(spent)
    return counted, end - first[0]


MEASURES = ("raw kafka-python", "raw confluent", "driftline kafka-python", "driftline confluent")


def measure(
    name: str, bootstrap: str, topic: str, n: int, ref: Path, cpu: dict[str, float]
) -> tuple[int, float]:
    if name == "raw kafka-python":
        return raw_consume_rate(bootstrap, topic, n, LOW_TIMEOUTS)
    if name == "raw confluent":
        return raw_confluent_rate(bootstrap, topic, n, LOW_TIMEOUTS)
    return driftline_rate(bootstrap, topic, n, ref, name.removeprefix("driftline "), cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--bootstrap-servers")
    parser.add_argument("--trials", type=int, default=3, help="alternating trials of each")
    parser.add_argument("--only", nargs="*", choices=MEASURES, default=list(MEASURES))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rates: dict[str, list[float]] = {m: [] for m in args.only}
    costs: dict[str, list[dict[str, float]]] = {m: [] for m in args.only}
    complete = True
    with tempfile.TemporaryDirectory() as tmp:
        broker = None
        bootstrap = args.bootstrap_servers
        if bootstrap is None:
            broker = EmbeddedBroker()
            broker.start()
            bootstrap = broker.bootstrap_servers
        try:
            topic = f"bench-{uuid.uuid4().hex[:8]}"
            ensure_topics(bootstrap, [topic], partitions=4)
            ensure_topics(bootstrap, [topic + ".dlq"])
            ref = Path(tmp) / "reference.csv"
            cols = columns(rng, 20_000)
            names = list(cols)
            rows = zip(*(cols[c].tolist() for c in names), strict=True)
            ref.write_text(",".join(names) + "\n" + "\n".join(",".join(map(str, r)) for r in rows))
            produce_s = produce(bootstrap, topic, args.events, rng)
            print(
                f"events: {args.events} (20 numerical + 5 categorical features, 4 partitions), "
                f"produced in {produce_s:.1f}s; {args.trials} alternating trials"
            )
            for trial in range(1, args.trials + 1):
                cells = []
                for name in args.only:
                    cpu: dict[str, float] = {}
                    got, seconds = measure(name, bootstrap, topic, args.events, ref, cpu)
                    complete &= got == args.events
                    rates[name].append(got / seconds if seconds > 0 else float("nan"))
                    cells.append(f"{name} {rates[name][-1]:>9,.0f}")
                    if cpu:
                        costs[name].append({k: v / got * 1e6 for k, v in cpu.items()})
                print(f"trial {trial}: " + "   ".join(cells) + "  events/s", flush=True)
        finally:
            if broker is not None:
                broker.stop()
    print("median events/s: " + ", ".join(f"{m} {np.median(r):,.0f}" for m, r in rates.items()))
    # per event, in microseconds: a raw client's whole time per record, and how stage 1's
    # thread spent its CPU (what is not decoding or counting is the client's poll and the
    # loop), so the two can be set side by side
    for m, r in rates.items():
        if m.startswith("raw"):
            print(f"median µs per record, {m}: {1e6 / float(np.median(r)):.2f} (wall)")
    for m, cs in costs.items():
        if cs:
            med = {k: float(np.median([c[k] for c in cs])) for k in cs[0]}
            rest = med["total"] - med["decode"] - med["count"]
            print(
                f"median µs per event, {m}: wall {1e6 / float(np.median(rates[m])):.2f}, "
                f"stage 1 CPU {med['total']:.2f} = decode {med['decode']:.2f} + count "
                f"{med['count']:.2f} + client poll and loop {rest:.2f}"
            )
    for num, den in (
        ("driftline kafka-python", "raw kafka-python"),
        ("driftline confluent", "raw confluent"),
        ("driftline confluent", "driftline kafka-python"),
        ("raw confluent", "raw kafka-python"),
    ):
        if num in rates and den in rates:
            ratios = [a / b for a, b in zip(rates[num], rates[den], strict=True)]
            print(
                f"ratio {num} / {den}: median {float(np.median(ratios)):.2f} "
                f"(min {min(ratios):.2f}, max {max(ratios):.2f})"
            )
    return 0 if complete else 1


if __name__ == "__main__":
    raise SystemExit(main())
