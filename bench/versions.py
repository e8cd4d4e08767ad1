"""Model versions: the cost of windows per version, on stage 1 (no broker).

A model of 20 numerical and 5 categorical features; the same requests fed to stage 1
(``InputPartitions``) three ways, in alternating trials of one run:

- ``one version``: every request answered by v1 only;
- ``shadow, versions off``: v1 and a shadow v2 answer every request (twice the events),
  ``versions.live: 0``;
- ``shadow, versions on``: the same with the default ``versions.live: 3`` (each version
  keeps its own window and label join beside the model's).

Prints events/s (predictions handled, the shadow's included) and ratios. Not a test.

    python bench/versions.py [--requests 100000] [--batch 5000] [--trials 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from consumers.decoding import DecodedBatch
from consumers.service import Service
from monitor.config import DriftlineConfig
from monitor.events import EventBatch

CATS = np.array([f"k{i}" for i in range(20)], dtype=object)


def columns(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    cols: dict[str, np.ndarray] = {f"x{i}": rng.normal(size=n) for i in range(20)}
    cols.update({f"c{i}": rng.choice(CATS, n) for i in range(5)})
    return cols


def batch(cols: dict[str, np.ndarray], ids: list[str], t: np.ndarray, version: str) -> DecodedBatch:
    n = len(ids)
    score = np.random.default_rng(len(version)).random(n)
    return DecodedBatch(
        batches={
            "m": EventBatch(
                model="m",
                event_time=t,
                event_id=ids,
                model_version=np.full(n, version, dtype=object),
                numerical={k: v for k, v in cols.items() if k.startswith("x")},
                categorical={k: v for k, v in cols.items() if k.startswith("c")},
                score=score,
                label=np.full(n, None, dtype=object),
                latency_ms=np.full(n, np.nan),
            )
        }
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(tmp) / "ref.csv"
        cols = columns(rng, 20_000)
        names = list(cols)
        rows = zip(*(cols[k].tolist() for k in names), strict=True)
        ref.write_text(",".join(names) + "\n" + "\n".join(",".join(map(str, r)) for r in rows))

        def config(live: int) -> DriftlineConfig:
            return DriftlineConfig.model_validate(
                {
                    "windows": {"pane": "60s", "size": "1h", "allowed_lateness": "0s"},
                    "models": [{"name": "m", "reference": {"path": str(ref)},
                                "versions": {"live": live}}],
                }
            )  # fmt: skip

        batches = []
        for lo in range(0, args.requests, args.batch):
            ids = [f"r{i}" for i in range(lo, lo + args.batch)]
            t = lo * 0.01 + np.arange(args.batch) * 0.01
            batches.append((columns(rng, args.batch), ids, t))
        ways = {
            "one version": (3, ("v1",)),
            "shadow, versions off": (0, ("v1", "v2")),
            "shadow, versions on": (3, ("v1", "v2")),
        }
        prepared = {
            name: [batch(c, ids, t, v) for c, ids, t in batches for v in versions]
            for name, (_, versions) in ways.items()
        }
        rates: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.trials):
            for name, (live, versions) in ways.items():
                service = Service(config(live))
                events = args.requests * len(versions)
                started = time.perf_counter()
                for decoded in prepared[name]:
                    service.inputs.handle(decoded, float(decoded.batches["m"].event_time[-1]), 0)
                rates[name].append(events / (time.perf_counter() - started))
    best = {name: max(r) for name, r in rates.items()}
    for name, r in rates.items():
        print(f"{name}: {best[name]:,.0f} events/s (trials: {', '.join(f'{x:,.0f}' for x in r)})")
    print(
        "shadow with versions on / off: "
        f"{best['shadow, versions on'] / best['shadow, versions off']:.2f}; "
        f"shadow off / one version: {best['shadow, versions off'] / best['one version']:.2f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
