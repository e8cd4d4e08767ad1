"""driftline's incremental re-evaluation vs batch drift tools, on the same windows.

A reference of 10,000 rows and a sliding window of W events in 10 panes, F features
(80 % numerical, 20 % categorical). One re-evaluation is what happens when a pane closes:

* driftline: the new pane's W/10 events are binned into the counts it keeps
  (``ModelMonitor.ingest``) and the window is evaluated from the counts (``evaluate``:
  every feature's drift score and verdict, reported methods included);
* Evidently: ``Report([DataDriftPreset()]).run`` on the window's W rows and the reference
  (it recomputes everything from the rows, as a batch tool does; its Dataset of the
  window is built in the timed part too);
* NannyML (when installed): ``UnivariateDriftCalculator`` fitted once on the reference,
  ``calculate`` on the window's W rows as one chunk.

Each side's re-evaluations of one (W, F) alternate in one run; the figure is the median
time of one. The reference's one-time cost (driftline's profile and null-distribution
calibration; the tools' fitting) is printed apart. Not a test, and not in the test
dependencies: ``pip install 'driftline[bench]'`` first.

    python bench/vs_batch.py [--events 1000 10000 100000 1000000] [--features 25 100]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from monitor.evaluation import DriftPolicy
from monitor.events import EventBatch
from monitor.model_state import ModelMonitor, WindowSpec
from monitor.reference import build_profile

# no usage reports from the tools while timing them (they would wait on the network)
os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")
os.environ.setdefault("EVIDENTLY_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")

PANES = 10
REFERENCE_ROWS = 10_000
CATEGORIES = np.array([f"v{j}" for j in range(12)], dtype=object)


def names(features: int) -> tuple[list[str], list[str]]:
    n_cat = features // 5
    return [f"num_{i}" for i in range(features - n_cat)], [f"cat_{i}" for i in range(n_cat)]


def columns(rng: np.random.Generator, features: int, n: int, shift: float) -> dict[str, Any]:
    num, cat = names(features)
    cols: dict[str, Any] = {k: rng.normal(i * 0.1 + shift, 1.0, n) for i, k in enumerate(num)}
    cols.update({k: rng.choice(CATEGORIES, n) for k in cat})
    return cols


def batch(cols: dict[str, Any], times: np.ndarray) -> EventBatch:
    n = times.size
    return EventBatch(
        model="m",
        event_time=times,
        event_id=[str(i) for i in range(n)],
        model_version=np.full(n, None, dtype=object),
        numerical={k: v for k, v in cols.items() if k.startswith("num_")},
        categorical={k: v for k, v in cols.items() if k.startswith("cat_")},
        score=np.full(n, np.nan),
        label=np.full(n, None, dtype=object),
        latency_ms=np.full(n, np.nan),
    )


class Driftline:
    name = "driftline"

    def __init__(self, reference: dict[str, Any]) -> None:
        profile = build_profile("m", reference)
        profile.calibrate()  # at start, as the service does
        self.monitor = ModelMonitor(profile, WindowSpec(1.0, float(PANES), 0.0), DriftPolicy())
        self.pane = 0

    def fill(self, panes: list[dict[str, Any]]) -> None:
        for cols in panes:
            self.step(cols)

    def step(self, cols: dict[str, Any]) -> None:
        n = len(next(iter(cols.values())))
        times = np.full(n, self.pane + 0.5)
        self.pane += 1
        self.monitor.ingest(batch(cols, times))
        self.monitor.advance(float(self.pane) + 0.01)  # the pane closes
        self.monitor.evaluate(now=float(self.pane))


class SlidingRows:
    """The window's rows, a pane at a time, as a batch tool is given them."""

    def __init__(self) -> None:
        self.panes: list[pd.DataFrame] = []

    def fill(self, panes: list[dict[str, Any]]) -> None:
        self.panes = [pd.DataFrame(cols) for cols in panes]

    def window(self, cols: dict[str, Any]) -> pd.DataFrame:
        self.panes = [*self.panes[1:], pd.DataFrame(cols)]
        return pd.concat(self.panes, ignore_index=True)


class Evidently(SlidingRows):
    name = "evidently"

    def __init__(self, reference: dict[str, Any]) -> None:
        super().__init__()
        from evidently import DataDefinition, Dataset, Report
        from evidently.presets import DataDriftPreset

        num = [k for k in reference if k.startswith("num_")]
        cat = [k for k in reference if k.startswith("cat_")]
        self.definition = DataDefinition(numerical_columns=num, categorical_columns=cat)
        self.dataset = Dataset
        self.reference = Dataset.from_pandas(pd.DataFrame(reference), self.definition)
        self.report = Report([DataDriftPreset()])

    def step(self, cols: dict[str, Any]) -> None:
        current = self.dataset.from_pandas(self.window(cols), self.definition)
        self.report.run(current, self.reference)


class NannyML(SlidingRows):
    name = "nannyml"

    def __init__(self, reference: dict[str, Any]) -> None:
        super().__init__()
        import nannyml

        self.calculator = nannyml.UnivariateDriftCalculator(
            column_names=list(reference), chunk_number=1
        )
        self.calculator.fit(pd.DataFrame(reference))

    def step(self, cols: dict[str, Any]) -> None:
        self.calculator.calculate(self.window(cols))


def timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, nargs="*", default=[1000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--features", type=int, nargs="*", default=[25, 100])
    parser.add_argument("--repeats", type=int, default=3, help="re-evaluations of each side")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    tools: list[type[Any]] = [Driftline]
    for module, tool in (("evidently", Evidently), ("nannyml", NannyML)):
        if importlib.util.find_spec(module) is not None:
            tools.append(tool)
        else:
            print(f"{module} is not installed: left out")
    rng = np.random.default_rng(0)
    print(
        f"{'events':>9} {'features':>8}  "
        + "  ".join(f"{t.name + ' s':>14}" for t in tools)
        + "  "
        + "  ".join(f"{t.name + '/driftline':>20}" for t in tools[1:])
    )
    for features in args.features:
        reference = columns(rng, features, REFERENCE_ROWS, 0.0)
        setup = {}
        sides = []
        for tool in tools:
            started = time.perf_counter()
            sides.append(tool(reference))
            setup[tool.name] = time.perf_counter() - started
        print(
            f"one-time set-up with {features} features: "
            + ", ".join(f"{k} {v:.2f} s" for k, v in setup.items())
        )
        for events in args.events:
            per_pane = events // PANES
            panes = [columns(rng, features, per_pane, 0.0) for _ in range(PANES)]
            for side in sides:
                side.fill(panes)
                if events < 1_000_000:  # a warm-up, not timed (the largest runs need none)
                    side.step(columns(rng, features, per_pane, 0.0))
            times: dict[str, list[float]] = {side.name: [] for side in sides}
            for r in range(args.repeats if events < 1_000_000 else 1):
                new = columns(rng, features, per_pane, 0.2 * r)
                for side in sides:
                    times[side.name].append(timed(lambda s=side, c=new: s.step(c)))
            med = {k: float(np.median(v)) for k, v in times.items()}
            print(
                f"{events:>9,} {features:>8}  "
                + "  ".join(f"{med[t.name]:>14.4f}" for t in tools)
                + "  "
                + "  ".join(f"{med[t.name] / med['driftline']:>20.1f}" for t in tools[1:]),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
