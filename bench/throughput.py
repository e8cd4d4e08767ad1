"""End-to-end throughput: raw kafka-python consumption vs driftline on the same broker.

Produces N prediction events (20 numerical + 5 categorical features) to a fresh topic,
then, in one run, measures (a) plain kafka-python consuming the topic and (b) driftline's
service consuming it (decode + windows + drift), each from its first record to its last,
and prints both rates and their ratio. Not a test: run it with ``make bench``.

    python bench/throughput.py [--events 200000] [--bootstrap-servers H:P]
"""

from __future__ import annotations

import argparse
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

from raw_consume import raw_consume_rate

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


def produce(bootstrap: str, topic: str, n: int, rng: np.random.Generator) -> float:
    cols = columns(rng, n)
    producer = KafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, batch_size=512 * 1024, acks=1
    )
    t0 = float(int(time.time()) - 3600)  # within validation's accepted range
    start = time.perf_counter()
    lists = {k: v.tolist() for k, v in cols.items()}
    for i in range(n):
        event = {
            "event_id": f"e{i}",
            "model": "bench",
            "model_version": "v1",
            "timestamp": t0 + i * 0.001,
            "features": {k: lists[k][i] for k in lists},
            "prediction": 0.5,
            "latency_ms": 3.0,
        }
        producer.send(topic, key=event["event_id"].encode(), value=msgspec.json.encode(event))
    producer.flush()
    producer.close()
    return time.perf_counter() - start


def bench_config(bootstrap: str, topic: str, reference: Path, group: str) -> DriftlineConfig:
    """The benchmarks' service: model ``bench`` on ``topic``, a fresh group named ``group-*``."""
    return DriftlineConfig.model_validate(
        {
            "kafka": {
                "bootstrap_servers": bootstrap,
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


def driftline_rate(bootstrap: str, topic: str, n: int, reference: Path) -> tuple[int, float]:
    config = bench_config(bootstrap, topic, reference, "bench-driftline")
    service = Service(config)
    first: list[float] = []
    decode = service.decoder.decode

    def timed_decode(values: Any, times: Any, now: float | None = None) -> Any:
        if not first:
            first.append(time.perf_counter())
        return decode(values, times, now=now)

    service.decoder.decode = timed_decode  # type: ignore[method-assign]
    stop = threading.Event()
    loop = ConsumerLoop(service, config.kafka)
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    counted, deadline = 0, time.time() + 600
    while time.time() < deadline:
        counted = service.events_counted("bench")
        if counted >= n:
            break
        time.sleep(0.01)
    end = time.perf_counter()
    stop.set()
    thread.join(30)
    return counted, end - first[0]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--bootstrap-servers")
    parser.add_argument("--trials", type=int, default=3, help="alternating raw/driftline runs")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        broker = None
        bootstrap = args.bootstrap_servers
        if bootstrap is None:
            broker = EmbeddedBroker()
            broker.start()
            bootstrap = broker.bootstrap_servers
        try:
            topic = f"bench-{uuid.uuid4().hex[:8]}"
            ensure_topics(bootstrap, [topic, topic + ".dlq"])
            ref = Path(tmp) / "reference.csv"
            cols = columns(rng, 20_000)
            names = list(cols)
            rows = zip(*(cols[c].tolist() for c in names), strict=True)
            ref.write_text(",".join(names) + "\n" + "\n".join(",".join(map(str, r)) for r in rows))
            produce_s = produce(bootstrap, topic, args.events, rng)
            print(
                f"events: {args.events} (20 numerical + 5 categorical features), "
                f"produced in {produce_s:.1f}s; {args.trials} alternating trials"
            )
            raw_rates, dl_rates, complete = [], [], True
            for trial in range(1, args.trials + 1):
                raw_n, raw_s = raw_consume_rate(bootstrap, topic, args.events, LOW_TIMEOUTS)
                dl_n, dl_s = driftline_rate(bootstrap, topic, args.events, ref)
                complete &= raw_n == args.events and dl_n == args.events
                raw_rates.append(raw_n / raw_s)
                dl_rates.append(dl_n / dl_s)
                print(
                    f"trial {trial}: raw kafka-python {raw_rates[-1]:>9,.0f} events/s   "
                    f"driftline end to end {dl_rates[-1]:>9,.0f} events/s   "
                    f"ratio {dl_rates[-1] / raw_rates[-1]:.2f}"
                )
        finally:
            if broker is not None:
                broker.stop()
    raw_med, dl_med = float(np.median(raw_rates)), float(np.median(dl_rates))
    ratios = [d / r for d, r in zip(dl_rates, raw_rates, strict=True)]
    print(f"median: raw {raw_med:,.0f} events/s, driftline {dl_med:,.0f} events/s")
    print(
        f"ratio driftline / raw: median {float(np.median(ratios)):.2f} "
        f"(min {min(ratios):.2f}, max {max(ratios):.2f})"
    )
    return 0 if complete else 1


if __name__ == "__main__":
    raise SystemExit(main())
