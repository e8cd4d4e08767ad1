"""Decoding cost: driftline's typed msgspec batch decoder vs pydantic, in one run.

Encodes N prediction events (20 numerical + 5 categorical features) and times
(a) pydantic v2 ``model_validate_json`` per event, (b) msgspec with the same typed event,
(c) driftline's ``BatchDecoder`` all the way to numpy columns. Prints ratios.

    python bench/decode.py [--events 100000]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from datetime import datetime

import msgspec
import numpy as np
import pydantic

from consumers.decoding import BatchDecoder
from monitor.schema import FeatureKind, FeatureSpec

NUM = [f"num_{i}" for i in range(20)]
CAT = [f"cat_{i}" for i in range(5)]


def events(n: int) -> list[bytes]:
    rng = np.random.default_rng(0)
    nums = {k: rng.normal(size=n).tolist() for k in NUM}
    cats = {k: rng.choice(["a", "b", "c", "d"], n).tolist() for k in CAT}
    out = []
    for i in range(n):
        features: dict[str, float | str] = {k: nums[k][i] for k in NUM}
        features.update({k: cats[k][i] for k in CAT})
        out.append(
            msgspec.json.encode(
                {
                    "event_id": f"e{i}",
                    "model": "bench",
                    "model_version": "v1",
                    "timestamp": "2026-11-27T19:00:00.123Z",
                    "features": features,
                    "prediction": 0.5,
                    "latency_ms": 3.0,
                }
            )
        )
    return out


class PydanticEvent(pydantic.BaseModel):
    event_id: str
    model: str
    model_version: str | None = None
    timestamp: datetime | float | None = None
    features: dict[str, float | str | None]
    prediction: float | str | None = None
    latency_ms: float | None = None


class MsgspecEvent(msgspec.Struct):
    event_id: str
    model: str
    features: dict[str, float | str | None]
    model_version: str | None = None
    timestamp: datetime | float | None = None
    prediction: float | str | None = None
    latency_ms: float | None = None


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    values = events(args.events)
    specs = [FeatureSpec(k, FeatureKind.NUMERICAL) for k in NUM]
    specs += [FeatureSpec(k, FeatureKind.CATEGORICAL) for k in CAT]
    decoder = BatchDecoder({"bench": specs})
    ms = msgspec.json.Decoder(MsgspecEvent)
    times = [0.0] * len(values)
    t_pyd = best_of(lambda: [PydanticEvent.model_validate_json(v) for v in values])
    t_msg = best_of(lambda: [ms.decode(v) for v in values])
    t_dl = best_of(lambda: decoder.decode(values, times))
    n = args.events
    print(f"events: {n}, 20 numerical + 5 categorical features, best of 3")
    print(f"pydantic v2 model_validate_json:     {n / t_pyd:>10,.0f} events/s")
    print(f"msgspec typed decode:                {n / t_msg:>10,.0f} events/s")
    print(f"driftline BatchDecoder -> columns:   {n / t_dl:>10,.0f} events/s")
    print(f"ratio msgspec / pydantic:            {t_pyd / t_msg:.1f}x")
    print(f"ratio driftline columns / pydantic:  {t_pyd / t_dl:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
