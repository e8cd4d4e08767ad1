"""Cost of a checkpoint: time and bytes, for the directory and the Kafka-topic stores.

Fills a service's windows (20 numerical + 5 categorical features, a 1 h window of 60 s
panes, several partitions), then times state capture + encoding, and saving to each
store, and prints the share of a checkpoint interval it costs.

    python bench/checkpoint.py [--partitions 3] [--interval 30]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from throughput import CAT, NUM, columns

from consumers.broker import EmbeddedBroker
from consumers.checkpoints import DirectoryStore, KafkaTopicStore, encode_checkpoint
from consumers.decoding import DecodedBatch
from consumers.service import Service
from monitor.config import DriftlineConfig
from monitor.events import EventBatch


def filled_service(ref: Path, partitions: int, events_per_pane: int) -> Service:
    config = DriftlineConfig.model_validate(
        {
            "windows": {"pane": "60s", "size": "1h", "allowed_lateness": "5m"},
            "models": [{"name": "bench", "reference": {"path": str(ref)}}],
        }
    )
    service = Service(config)
    rng = np.random.default_rng(1)
    t0 = float(int(time.time()) // 3600 * 3600 - 2 * 3600)
    n = events_per_pane * 70  # 70 panes: a full hour in the window, plus open panes
    for p in range(partitions):
        cols = columns(rng, n)
        batch = EventBatch(
            model="bench",
            event_time=np.sort(rng.uniform(t0, t0 + 70 * 60, n)),
            event_id=[f"{p}-{i}" for i in range(n)],
            model_version=np.full(n, "v1", dtype=object),
            numerical={k: cols[k] for k in NUM},
            categorical={k: cols[k] for k in CAT},
            score=rng.random(n),
            label=np.full(n, None, dtype=object),
            latency_ms=rng.gamma(2, 2, n),
        )
        service.handle(DecodedBatch(batches={"bench": batch}), time.time(), p)
    return service


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--events-per-pane", type=int, default=500)
    parser.add_argument("--interval", type=float, default=30.0, help="checkpoint interval, s")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(tmp) / "ref.csv"
        cols = columns(np.random.default_rng(0), 20_000)
        names = list(cols)
        rows = zip(*(cols[c].tolist() for c in names), strict=True)
        ref.write_text(",".join(names) + "\n" + "\n".join(",".join(map(str, r)) for r in rows))
        service = filled_service(ref, args.partitions, args.events_per_pane)
        ev = service.evaluation("bench")
        windowed = ev.window_events if ev else 0
        print(
            f"state: {args.partitions} partitions, 25 features, {windowed} events in "
            f"the 1 h window of 60 s panes"
        )

        def capture() -> list[bytes]:
            return [
                encode_checkpoint(
                    {"offset": 0, "partition": p, "state": service.partition_state(p)}
                )
                for p in range(args.partitions)
            ]

        timings = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            blobs = capture()
            timings.append(time.perf_counter() - start)
        size = sum(len(b) for b in blobs)
        encode_s = float(np.median(timings))
        print(
            f"capture + encode: {encode_s * 1000:.1f} ms, {size / 1024:.0f} KiB for all partitions"
        )

        store = DirectoryStore(Path(tmp) / "state", keep=3)
        timings = []
        for _ in range(args.repeat):
            start = time.perf_counter()
            for p, blob in enumerate(blobs):
                store.save(f"g/t/{p}", blob)
            timings.append(time.perf_counter() - start)
        dir_s = float(np.median(timings))
        print(f"directory store save (fsync, rename): {dir_s * 1000:.1f} ms")

        with EmbeddedBroker() as broker:
            kstore = KafkaTopicStore(broker.bootstrap_servers, "driftline.state")
            timings = []
            for _ in range(args.repeat):
                start = time.perf_counter()
                for p, blob in enumerate(blobs):
                    kstore.save(f"g/t/{p}", blob)
                timings.append(time.perf_counter() - start)
            kafka_s = float(np.median(timings))
            start = time.perf_counter()
            assert kstore.load("g/t/0") == blobs[0]
            load_s = time.perf_counter() - start
            kstore.close()
        print(
            f"kafka topic store save (acks=all): {kafka_s * 1000:.1f} ms; "
            f"load {load_s * 1000:.0f} ms"
        )
        for name, s in (("directory", dir_s), ("kafka topic", kafka_s)):
            share = (encode_s + s) / args.interval
            print(
                f"  {name}: one checkpoint every {args.interval:g}s costs {share:.3%} of the time"
            )
        print(
            "retention: the directory store keeps the newest 3 per partition "
            f"({3 * size / 1024:.0f} KiB)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
