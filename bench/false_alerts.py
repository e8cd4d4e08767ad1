"""False alerts of the drift rules on a stationary stream, over days of event time.

    python bench/false_alerts.py [--days 7] [--rate 1] [--reference-rows 20000] [--seeds 1]

One model with 25 features of mixed shapes (normal, lognormal, heavy-tailed t(2),
zero-inflated, integers with ties, 5 and 200 categories). A reference file and the live
events are drawn from the same law, so every alert is a false one. The events (``--rate``
a second, Poisson arrivals, ``--days`` of event time) go through ``driftline replay``
with the default windows (pane 60s, size 1h, lateness 5m), the default drift settings and
rules that page on ``driftline_feature_drifted >= 1`` held for various ``for:`` (one alert
per feature, as the shipped Prometheus rule ``DriftlineFeatureDrift`` does). The first
hour (windows not yet full) is left out of the counts.

Prints, per seed (each seed draws its own reference and events): evaluations, the share
with any feature flagged (the budget is ``drift.false_alarm_rate``, 1%), the lag-1
autocorrelation of that any-flag series, the firings of each rule and the expected time
between false alerts (days replayed / firings, with an exact 95% Poisson interval).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray
from scipy import stats

from monitor.config import parse_duration
from monitor.evaluation import DriftPolicy
from monitor.repeated import runs_per_evaluation

PANE = 60.0
WINDOW = 3600.0
#: ``for:`` of the rules measured; 5m is the shipped DriftlineFeatureDrift's
FORS = ("0s", "5m", "10m", "15m", "30m", "60m")

Sampler = Callable[[np.random.Generator, int], NDArray[Any]]


def _levels(probs: NDArray[np.float64]) -> Sampler:
    names = np.array([f"c{i}" for i in range(probs.size)], dtype=object)
    return lambda g, n: g.choice(names, size=n, p=probs)


_P5 = np.array([0.4, 0.25, 0.15, 0.12, 0.08])
_P200 = np.asarray(1.0 / np.arange(1, 201) ** 0.8, dtype=np.float64)
_P200 /= _P200.sum()

#: (name, type, sampler, how many features of that shape): 25 features in all
SHAPES: tuple[tuple[str, str, Sampler, int], ...] = (
    ("normal", "numerical", lambda g, n: g.normal(size=n), 4),
    ("lognormal", "numerical", lambda g, n: g.lognormal(size=n), 4),
    ("t2", "numerical", lambda g, n: g.standard_t(2, size=n), 4),
    (
        "zinf",
        "numerical",
        lambda g, n: np.where(g.random(n) < 0.6, 0.0, g.exponential(size=n)),
        4,
    ),
    ("ints", "numerical", lambda g, n: g.poisson(3, size=n).astype(np.float64), 3),
    ("cat5", "categorical", _levels(_P5), 3),
    ("cat200", "categorical", _levels(_P200), 3),
)


def features() -> list[tuple[str, str, Sampler]]:
    return [(f"{name}_{i}", kind, s) for name, kind, s, k in SHAPES for i in range(k)]


def draw(rng: np.random.Generator, n: int) -> dict[str, NDArray[Any]]:
    return {name: sample(rng, n) for name, _, sample in features()}


def write_inputs(
    directory: Path,
    seed: int,
    days: float,
    rate: float,
    reference_rows: int,
    batch: float,
    false_alarm_rate: float,
    false_alert_interval: str,
) -> tuple[Path, int]:
    """The reference file, the events file and the config; returns the config's path and
    the number of events."""
    rng = np.random.default_rng(seed)
    pq.write_table(
        pa.table({k: pa.array(v.tolist()) for k, v in draw(rng, reference_rows).items()}),
        directory / "reference.parquet",
    )
    start = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    n = int(rng.poisson(rate * days * 86400))
    times = np.sort(rng.uniform(start, start + days * 86400, size=n))
    # stamped in batches, as a client that flushes every few seconds: the replay steps
    # once per distinct second, so this keeps a week's replay within minutes
    times = np.floor(times / batch) * batch
    writer: pq.ParquetWriter | None = None
    chunk = 200_000
    for lo in range(0, n, chunk):
        hi = min(n, lo + chunk)
        values = draw(rng, hi - lo)
        table = pa.table(
            {
                "event_id": pa.array([f"e{i}" for i in range(lo, hi)]),
                "model": pa.array(["stationary"] * (hi - lo)),
                "timestamp": pa.array(times[lo:hi]),
                "features": pa.StructArray.from_arrays(
                    [pa.array(v.tolist()) for v in values.values()], names=list(values)
                ),
            }
        )
        if writer is None:
            writer = pq.ParquetWriter(directory / "events.parquet", table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()
    rules = [
        {
            "alert": f"Drift_for_{f}",
            "metric": "driftline_feature_drifted",
            "op": ">=",
            "threshold": 1,
            "for": f,
        }
        for f in FORS
    ]
    config = {
        "kafka": {"bootstrap_servers": "localhost:9092"},
        "windows": {"pane": "60s", "size": "1h", "allowed_lateness": "5m"},
        "state": {"dir": str(directory / "state")},
        "validation": {"max_age": f"{math.ceil(days) + 2}d"},
        "models": [
            {
                "name": "stationary",
                "task": "binary_classification",
                "reference": {"path": "reference.parquet"},
                "features": {name: {"type": kind} for name, kind, _ in features()},
                "drift": {
                    "false_alarm_rate": false_alarm_rate,
                    "false_alert_interval": None
                    if false_alert_interval == "null"
                    else false_alert_interval,
                },
            }
        ],
        "alerts": {"rules": rules},
    }
    path = directory / "driftline.yaml"
    path.write_text(json.dumps(config, indent=1))  # JSON is YAML
    return path, n


def replay(directory: Path, config: Path) -> tuple[Path, float]:
    driftline = Path(sys.executable).with_name("driftline")
    out = directory / "windows.jsonl"
    t0 = time.perf_counter()
    subprocess.run(
        [
            *(str(driftline), "replay", "--config", str(config)),
            *("--input", str(directory / "events.parquet"), "--output", str(out)),
        ],
        check=True,
        stderr=subprocess.DEVNULL,
    )
    return out, time.perf_counter() - t0


def _iso_seconds(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def poisson_interval(k: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) interval for the mean of a Poisson count ``k``."""
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(stats.chi2.ppf(a, 2 * k) / 2)
    hi = float(stats.chi2.ppf(1 - a, 2 * k + 2) / 2)
    return lo, hi


#: rules counted from the verdicts instead of by the replay: (for, keep_firing_for) in
#: panes; (0, 5) is the README's example rule (for: 0s, keep_firing_for: 5m)
OFFLINE = ((0, 5), (5, 5))


def firings(flags: NDArray[np.bool_], hold: int, keep: int) -> int:
    """Firings of a rule on one feature's verdicts, one per evaluation (pane): a run of
    more than ``hold`` flagged evaluations fires (``for:``), and a firing alert stays
    firing across gaps of fewer than ``keep`` evaluations (``keep_firing_for:``)."""
    edges = np.diff(np.concatenate(([0], flags.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    out, firing_until = 0, -1
    for start, end in zip(starts.tolist(), ends.tolist(), strict=True):
        if start < firing_until:  # still firing from an earlier run: extended
            firing_until = end + keep
        elif end - start > hold:
            out += 1
            firing_until = end + keep
    return out


def measure(out: Path) -> dict[str, Any]:
    """Counts over the windows of ``out`` after the first hour."""
    lines = [json.loads(x) for x in out.read_text().splitlines() if x]
    first = _iso_seconds(lines[0]["window_end"])
    full = [x for x in lines if _iso_seconds(x["window_end"]) >= first + WINDOW]
    names = sorted(full[0]["features"])
    flags = np.array([[bool(x["features"][f]["drifted"]) for f in names] for x in full], dtype=bool)
    any_flag = flags.any(axis=1).astype(np.float64)
    a, b = any_flag[:-1], any_flag[1:]
    lag1 = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else math.nan
    fired = dict.fromkeys(FORS, 0)
    for x in full:
        for alert in x["alerts"]:
            if alert["state"] == "firing":
                fired[alert["alert"].removeprefix("Drift_for_")] += 1
    offline = {
        (hold, keep): sum(firings(flags[:, j], hold, keep) for j in range(len(names)))
        for hold, keep in (*((int(parse_duration(f) // PANE), 0) for f in FORS), *OFFLINE)
    }
    runs = np.diff(np.concatenate(([0], any_flag.astype(int), [0])))
    starts, ends = np.flatnonzero(runs == 1), np.flatnonzero(runs == -1)
    return {
        "evaluations": len(full),
        "days": len(full) * PANE / 86400,
        "any_flag": float(any_flag.mean()),
        "feature_flag": float(flags.mean()),
        "lag1": lag1,
        "any_flag_runs": int(starts.size),
        "longest_run": int((ends - starts).max()) if starts.size else 0,
        "firings": fired,
        "offline": offline,
        "per_feature": {f: int(c) for f, c in zip(names, flags.sum(axis=0), strict=True) if c},
    }


def between(days: float, k: int) -> str:
    """Days between false alerts: the estimate and its exact 95% interval."""
    lo, hi = poisson_interval(k)
    mean = f"{days / k:.2f}" if k else f"> {days:.1f}"
    upper = f"{days / lo:.2f}" if lo > 0 else "inf"
    return f"{mean} (95% {days / hi:.2f} to {upper})"


def report(seed: int, m: dict[str, Any], seconds: float, events: int) -> None:
    print(
        f"seed {seed}: {events} events, {m['days']:.2f} days after the first hour, "
        f"{m['evaluations']} evaluations (replay {seconds:.0f} s)"
    )
    print(
        f"  any feature flagged: {m['any_flag']:.5f} of evaluations; per feature "
        f"{m['feature_flag']:.6f}; lag-1 autocorrelation {m['lag1']:.3f}; "
        f"{m['any_flag_runs']} runs of evaluations with a flag, longest {m['longest_run']}"
    )
    print(f"  flags per feature: {m['per_feature']}")
    for f in FORS:
        k = m["firings"][f]
        again = m["offline"][(int(parse_duration(f) // PANE), 0)]
        print(
            f"  for: {f:>4}: {k:4d} firings ({again} counted from the verdicts), "
            f"days between false alerts {between(m['days'], k)}"
        )
    for hold, keep in OFFLINE:
        k = m["offline"][(hold, keep)]
        print(
            f"  for: {hold}m, keep_firing_for: {keep}m (from the verdicts): {k:4d} firings, "
            f"days between false alerts {between(m['days'], k)}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--rate", type=float, default=1.0, help="events a second")
    parser.add_argument("--reference-rows", type=int, default=20_000)
    parser.add_argument("--batch", type=float, default=10.0, help="seconds per time stamp")
    parser.add_argument("--false-alarm-rate", type=float, default=0.01)
    parser.add_argument(
        "--false-alert-interval", default="7d", help="drift.false_alert_interval, or null"
    )
    parser.add_argument("--seeds", type=int, default=1, help="references and streams")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="write the files here instead of a temp dir")
    parser.add_argument(
        "--windows", type=Path, nargs="+", help="only count the replay outputs of earlier runs"
    )
    args = parser.parse_args()
    if args.windows:
        for path in args.windows:
            print(path)
            report(0, measure(path), 0.0, 0)
        return
    interval = args.false_alert_interval
    policy = DriftPolicy(
        false_alarm_rate=args.false_alarm_rate,
        false_alert_interval=None if interval == "null" else parse_duration(interval),
    )
    n_features = len(features())
    alpha = policy.feature_alpha(n_features, PANE, round(WINDOW / PANE))
    runs = runs_per_evaluation(alpha, round(WINDOW / PANE)) * n_features * 86400 / PANE
    print(
        f"false_alarm_rate {args.false_alarm_rate}, false_alert_interval {interval}: each "
        f"feature judged at {alpha:.3g} per evaluation ({alpha * n_features:.3g} for the "
        f"model); predicted runs of a flagged feature (firings at for: 0s) "
        f"{runs:.3g} a day, one every {1 / runs:.3g} days"
    )
    totals: dict[str, float] = {"days": 0.0}
    fired = dict.fromkeys(FORS, 0)
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        with tempfile.TemporaryDirectory() as tmp:
            directory = args.keep / str(seed) if args.keep else Path(tmp)
            directory.mkdir(parents=True, exist_ok=True)
            config, events = write_inputs(
                directory,
                seed,
                args.days,
                args.rate,
                args.reference_rows,
                args.batch,
                args.false_alarm_rate,
                args.false_alert_interval,
            )
            out, seconds = replay(directory, config)
            m = measure(out)
        report(seed, m, seconds, events)
        totals["days"] += m["days"]
        for f in FORS:
            fired[f] += m["firings"][f]
        sys.stdout.flush()
    if args.seeds > 1:
        print(f"all seeds: {totals['days']:.2f} days")
        for f in FORS:
            k = fired[f]
            print(f"  for: {f:>4}: {k:4d} firings, days between {between(totals['days'], k)}")


if __name__ == "__main__":
    main()
