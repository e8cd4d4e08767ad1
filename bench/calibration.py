"""False alarms and detection power of the drift verdicts, calibrated against fixed.

    python bench/calibration.py [--quick]

Stationary windows are drawn from the same law as the reference; drifted ones from a
moved law. A window's bin counts are drawn exactly: binning ``n`` independent values
gives multinomial counts with the law's own bin probabilities, so a window of 100 000
values costs one multinomial draw (every score is a function of bin counts). References are real
samples, built into profiles by driftline itself, and drawn afresh every
``--windows-per-reference`` windows, so the rates average over references as a user's do.

Prints three tables: the per-feature false-alarm rate at alpha = 0.05 for seven feature
shapes, next to the old fixed thresholds (W >= 0.1, JS >= 0.1); the share of evaluations
of a 25-feature model with any feature flagged, at the default 1% budget; and detection
power at that budget.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from monitor.drift import rows
from monitor.evaluation import DriftPolicy, MethodChoice
from monitor.events import EventBatch
from monitor.model_state import ModelMonitor, WindowSpec, feature_scores, threshold_for
from monitor.null_model import wasserstein_fixed
from monitor.reference import FeatureProfile, build_profile

SIZES = (100, 300, 1000, 10_000, 100_000)
REFERENCES = (5_000, 50_000)
FIXED = {"wasserstein": 0.1, "jensenshannon": 0.1}


@dataclass(frozen=True)
class Shape:
    name: str
    sample: Callable[[np.random.Generator, int], NDArray[np.float64] | NDArray[np.object_]]
    below: Callable[[NDArray[np.float64]], NDArray[np.float64]] | None  # P(X < e)
    probs: NDArray[np.float64] | None = None  # categorical levels' probabilities
    sd: float = 1.0


def _zinf_below(e: NDArray[np.float64]) -> NDArray[np.float64]:
    out: NDArray[np.float64] = np.where(e > 0, 0.6 + 0.4 * stats.expon.cdf(e), 0.0)
    return out


def _levels(k: int) -> NDArray[np.object_]:
    return np.array([f"c{i}" for i in range(k)], dtype=object)


_P5 = np.array([0.4, 0.25, 0.15, 0.12, 0.08])
_P200 = np.asarray(1.0 / np.arange(1, 201) ** 0.8, dtype=np.float64)
_P200 /= _P200.sum()

SHAPES = (
    Shape("normal", lambda g, n: g.normal(size=n), stats.norm.cdf),
    Shape(
        "lognormal",
        lambda g, n: g.lognormal(size=n),
        stats.lognorm(1).cdf,
        sd=float(stats.lognorm(1).std()),
    ),
    Shape("heavy-tailed t(2)", lambda g, n: g.standard_t(2, size=n), stats.t(2).cdf, sd=2.0),
    Shape(
        "zero-inflated",
        lambda g, n: np.where(g.random(n) < 0.6, 0.0, g.exponential(size=n)),
        _zinf_below,
        sd=float(math.sqrt(0.4 * 2 - 0.16)),
    ),
    Shape(
        "integers, ties",
        lambda g, n: g.poisson(3, size=n).astype(np.float64),
        lambda e: stats.poisson(3).cdf(np.ceil(e) - 1),
        sd=math.sqrt(3),
    ),
    Shape("5 categories", lambda g, n: g.choice(_levels(5), size=n, p=_P5), None, _P5),
    Shape("200 categories", lambda g, n: g.choice(_levels(200), size=n, p=_P200), None, _P200),
)


class Law:
    """A shape, possibly moved: ``a * X + b`` (numerical) or other level probabilities."""

    def __init__(
        self,
        shape: Shape,
        scale: float = 1.0,
        shift: float = 0.0,
        probs: NDArray[np.float64] | None = None,
    ) -> None:
        self.shape, self.scale, self.shift = shape, scale, shift
        self.probs = probs if probs is not None else shape.probs

    def bin_probs(self, fp: FeatureProfile) -> NDArray[np.float64]:
        if self.shape.below is None:
            assert self.probs is not None
            codes = fp.bins.assign(_levels(self.probs.size))  # type: ignore[arg-type]
            p = np.bincount(codes, weights=self.probs, minlength=fp.counts.size)
            return np.asarray(p / p.sum(), dtype=np.float64)
        edges = fp.bins.edges  # type: ignore[union-attr]
        below = self.shape.below((edges - self.shift) / self.scale)
        p = np.diff(np.concatenate(([0.0], below, [1.0])))
        p = np.maximum(p, 0.0)
        return np.asarray(p / p.sum(), dtype=np.float64)

    def windows(
        self, fp: FeatureProfile, n: int, count: int, rng: np.random.Generator
    ) -> NDArray[np.int64]:
        """Bin counts of ``count`` windows of ``n`` values, one row each."""
        return np.asarray(rng.multinomial(n, self.bin_probs(fp), size=count), dtype=np.int64)


def reference(shape: Shape, m: int, rng: np.random.Generator) -> FeatureProfile:
    return build_profile("m", {"x": shape.sample(rng, m)}).features[0]


def scores(fp: FeatureProfile, windows: NDArray[np.int64], method: str) -> NDArray[np.float64]:
    """``method``'s score of each window (one row of bin counts each), as one array
    operation; the first window is checked against the service's own scoring."""
    cur = windows.astype(np.float64)
    if method == "wasserstein":
        ref = np.broadcast_to(fp.counts.astype(np.float64), cur.shape)
        at = np.broadcast_to(fp.wasserstein_points(), cur.shape)
        out = wasserstein_fixed(ref, cur, at) / (fp.std if fp.std > 0 else 1.0)
    else:
        starts = fp.bins.coarse_starts
        cur = np.add.reduceat(cur, starts, axis=-1)
        ref = np.broadcast_to(np.add.reduceat(fp.counts.astype(np.float64), starts), cur.shape)
        out = rows(method, ref, cur)
    (service,) = feature_scores(fp, windows[0], (method,))
    assert math.isclose(service.score, out[0], rel_tol=1e-9, abs_tol=1e-12), (service, out[0])
    return out


def verdicts(
    fp: FeatureProfile,
    windows: NDArray[np.int64],
    n: int,
    alpha: float,
) -> tuple[NDArray[np.bool_], NDArray[np.bool_], NDArray[np.bool_]]:
    """Each window's verdict by the calibrated threshold alone, by the full rule (with the
    minimum effect), and by the old fixed threshold."""
    method = "wasserstein" if fp.kind.value == "numerical" else "jensenshannon"
    choice = MethodChoice(method)
    threshold, _ = threshold_for(fp, choice, n, alpha)
    score = scores(fp, windows, method)
    significant = score >= threshold
    return significant, significant & (score >= choice.effect), score >= FIXED[method]


def _header(first: str, width: int) -> str:
    return f"{first} " + " ".join(f"{'n=' + str(n):>{width}s}" for n in SIZES)


def _cell(counts: list[int], width: int) -> str:
    *flags, total = counts
    sig, cal, old = (f / max(total, 1) for f in flags)
    return f"{sig:.4f}/{cal:.4f} [{old:.2f}]".rjust(width)


LEGEND = "calibrated threshold alone / with the minimum effect [old fixed threshold]"


def false_alarms(args: argparse.Namespace, rng: np.random.Generator) -> None:
    print(f"\nPer-feature false-alarm rate, no drift, alpha = {args.alpha}")
    print(LEGEND)
    print(_header(f"{'shape':20s} {'m':>6s}", 22))
    for shape in SHAPES:
        law = Law(shape)
        for m in REFERENCES:
            counts = {n: [0, 0, 0, 0] for n in SIZES}
            for _ in range(args.references):
                fp = reference(shape, m, rng)
                for n in SIZES:
                    ws = law.windows(fp, n, args.windows_per_reference, rng)
                    for i, v in enumerate(verdicts(fp, ws, n, args.alpha)):
                        counts[n][i] += int(v.sum())
                    counts[n][3] += len(ws)
            cells = " ".join(_cell(counts[n], 22) for n in SIZES)
            print(f"{shape.name:20s} {m:6d} {cells}", flush=True)


def model_of_25(args: argparse.Namespace, rng: np.random.Generator) -> None:
    policy = DriftPolicy()
    alpha = policy.feature_alpha(25)
    shapes = [SHAPES[i % len(SHAPES)] for i in range(25)]
    laws = [Law(s) for s in shapes]
    print("\n25-feature model, no drift: share of evaluations with any feature flagged")
    print(f"(budget {policy.false_alarm_rate}, each feature judged at {alpha:.1e})")
    print(LEGEND)
    print(_header(f"{'m':>6s}", 22))
    k = args.windows_per_reference * 10  # a rate of 1% needs more windows than one of 5%
    for m in REFERENCES:
        counts = {n: [0, 0, 0, 0] for n in SIZES}
        for _ in range(args.references):
            profile = build_profile("m", {f"f{i}": s.sample(rng, m) for i, s in enumerate(shapes)})
            profile.calibrate()  # as `reference build` does: one thread per core
            for n in SIZES:
                flagged = [np.zeros(k, dtype=bool) for _ in range(3)]
                for fp, law in zip(profile.features, laws, strict=True):
                    for acc, v in zip(
                        flagged, verdicts(fp, law.windows(fp, n, k, rng), n, alpha), strict=True
                    ):
                        acc |= v
                for i, acc in enumerate(flagged):
                    counts[n][i] += int(acc.sum())
                counts[n][3] += k
        print(f"{m:6d} " + " ".join(_cell(counts[n], 22) for n in SIZES), flush=True)


def power(args: argparse.Namespace, rng: np.random.Generator) -> None:
    alpha = DriftPolicy().feature_alpha(25)
    m = REFERENCES[0]
    print(f"\nDetection power, m = {m}, each feature judged at {alpha:.1e}")
    print(LEGEND)
    print(_header(f"{'move':28s}", 22))
    normal, lognormal, cat5 = SHAPES[0], SHAPES[1], SHAPES[5]
    moves: list[tuple[str, Shape, dict[str, Any]]] = [
        ("normal, mean +0.1 std", normal, {"shift": 0.1}),
        ("normal, mean +0.25 std", normal, {"shift": 0.25}),
        ("normal, mean +0.5 std", normal, {"shift": 0.5}),
        ("normal, scale x1.5", normal, {"scale": 1.5}),
        ("lognormal, mean +0.1 std", lognormal, {"shift": 0.1 * lognormal.sd}),
        ("5 categories, 5-point move", cat5, {"probs": _P5 + np.array([-0.05, 0.05, 0, 0, 0])}),
        ("5 categories, 10-point move", cat5, {"probs": _P5 + np.array([-0.10, 0.10, 0, 0, 0])}),
    ]
    for name, shape, kw in moves:
        law = Law(shape, **kw)
        counts = {n: [0, 0, 0, 0] for n in SIZES}
        for _ in range(max(2, args.references // 2)):
            fp = reference(shape, m, rng)
            for n in SIZES:
                ws = law.windows(fp, n, args.windows_per_reference, rng)
                for i, v in enumerate(verdicts(fp, ws, n, alpha)):
                    counts[n][i] += int(v.sum())
                counts[n][3] += len(ws)
        print(f"{name:28s} " + " ".join(_cell(counts[n], 22) for n in SIZES), flush=True)


def cost(rng: np.random.Generator) -> None:
    cols = {f"x{i}": SHAPES[i % 5].sample(rng, 50_000) for i in range(20)}
    cols.update({f"c{i}": SHAPES[5 + i % 2].sample(rng, 50_000) for i in range(5)})
    profile = build_profile("m", cols)
    started = time.perf_counter()
    profile.calibrate()
    elapsed = time.perf_counter() - started
    fp = profile.features[0]
    started = time.perf_counter()
    for n in range(100, 10_100):
        fp.null_table().threshold("wasserstein", n, 4e-4)
    lookup = (time.perf_counter() - started) / 10_000
    print(f"\nCalibration of a 25-feature model (50 000 reference rows): {elapsed:.1f} s")
    print(f"One threshold lookup: {lookup * 1e6:.1f} us")
    # evaluation of a window of 20 000 events, calibrated vs fixed thresholds, interleaved
    n = 20_000
    batch = EventBatch(
        model="m",
        event_time=rng.uniform(0, 100, n),
        event_id=[str(i) for i in range(n)],
        model_version=np.full(n, None, dtype=object),
        numerical={k: np.asarray(v[:n], dtype=np.float64) for k, v in cols.items() if k[0] == "x"},
        categorical={k: np.asarray(v[:n], dtype=object) for k, v in cols.items() if k[0] == "c"},
        score=np.full(n, np.nan),
        label=np.full(n, None, dtype=object),
        latency_ms=np.full(n, np.nan),
    )
    fixed = DriftPolicy(
        numerical=MethodChoice("wasserstein", 0.1, ("psi", "ks")),
        categorical=MethodChoice("jensenshannon", 0.1, ("psi", "chisquare")),
    )
    monitors = {"calibrated": DriftPolicy(), "fixed": fixed}
    times: dict[str, list[float]] = {k: [] for k in monitors}
    built = {}
    for name, policy in monitors.items():
        mon = ModelMonitor(profile, WindowSpec(100.0, 100.0, 0.0), policy)
        mon.ingest(batch)
        mon.advance(100.0)
        built[name] = mon
    for _ in range(30):
        for name, mon in built.items():
            started = time.perf_counter()
            mon.evaluate(now=0.0)
            times[name].append(time.perf_counter() - started)
    cal, fix = (float(np.median(times[k])) for k in ("calibrated", "fixed"))
    print(
        f"Evaluating one window (25 features, 20 000 events): calibrated {cal * 1e3:.1f} ms, "
        f"fixed {fix * 1e3:.1f} ms, ratio {cal / fix:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer references and windows")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cost-only", action="store_true", help="only the cost figures")
    args = parser.parse_args()
    args.references = 4 if args.quick else 20
    args.windows_per_reference = 50 if args.quick else 100
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    cost(rng)
    if args.cost_only:
        return
    false_alarms(args, rng)
    model_of_25(args, rng)
    power(args, rng)
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
