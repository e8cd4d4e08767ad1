"""Segments: the cost of slicing a model's windows, on the pure core (no broker).

A model of 20 numerical and 5 categorical features, sliced by a tag of 50 values and by one
categorical feature (top 10 each: 22 segments); ingests the same batches with and without
the segments and prints the events/s ratio, a pane's bytes and an evaluation's time
(segments judged against the whole reference: no calibration of slices).
Not a test.

    python bench/segments.py [--events 200000] [--batch 10000]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor.events import EventBatch
from monitor.model_state import ModelMonitor, WindowSpec
from monitor.reference import build_profile
from monitor.segments import SegmentOptions

CATS = np.array([f"k{i}" for i in range(20)], dtype=object)
REGIONS = np.array([f"r{i}" for i in range(50)], dtype=object)


def columns(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {f"x{i}": rng.normal(size=n) for i in range(20)}
    cols.update({f"c{i}": rng.choice(CATS, n) for i in range(5)})
    return cols


def batch(rng: np.random.Generator, n: int, t0: float) -> EventBatch:
    cols = columns(rng, n)
    return EventBatch(
        model="m",
        event_time=t0 + rng.uniform(0, 60, n),
        event_id=[str(i) for i in range(n)],
        model_version=np.full(n, "v1", dtype=object),
        numerical={k: v for k, v in cols.items() if k.startswith("x")},
        categorical={k: v for k, v in cols.items() if k.startswith("c")},
        score=rng.random(n),
        label=np.full(n, None, dtype=object),
        latency_ms=np.full(n, np.nan),
        tags={"region": rng.choice(REGIONS, n)},
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=10_000)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    ref = columns(rng, 20_000)
    ref["tags.region"] = rng.choice(REGIONS, 20_000)
    plain = build_profile("m", {k: v for k, v in ref.items() if not k.startswith("tags.")})
    cut = SegmentOptions(("tags.region", "c0"), top_k=10, by_slice=False).apply(plain, ref)
    cut.calibrate()  # at start-up in the service, not in the first evaluation
    batches = [batch(rng, args.batch, 60.0 * i) for i in range(args.events // args.batch)]
    rates = {}
    for name, profile in (("plain", replace(cut, segments=None)), ("segmented", cut)):
        monitor = ModelMonitor(profile, WindowSpec(60.0, 3600.0, 0.0))
        started = time.perf_counter()
        for b in batches:
            monitor.ingest(b)
        rates[name] = args.events / (time.perf_counter() - started)
        pane = monitor.window.window
        size = pane.counts.nbytes + pane.sums.nbytes + pane.extra.nbytes
        started = time.perf_counter()
        monitor.evaluate(now=0.0)
        evaluated = time.perf_counter() - started
        print(
            f"{name}: {rates[name]:,.0f} events/s, {monitor.blocks} blocks, "
            f"{size:,} bytes per pane, evaluation {evaluated * 1000:.0f} ms"
        )
    print(f"segmented / plain ingest rate: {rates['segmented'] / rates['plain']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
