"""Estimated accuracy of miscalibrated binary models, with and without score calibration.

    python bench/estimated_performance.py [--seeds 5] [--nannyml-python PATH]

The truth is P(y = 1 | x) = sigmoid(x). Two models rank x correctly but their scores are
not probabilities: an overconfident one, sigmoid(2x), and a misspecified one,
sigmoid(0.5 + x + 0.5 x^3). The reference (20 000 rows, x ~ N(0, 1), with score and label)
builds a driftline profile, which holds the score calibration; live windows (20 000 rows)
come from the same law (no shift) or from x ~ N(0.7, 1.3) (covariate shift: P(y | x) is
kept). For each model and shift the table gives the realized accuracy at threshold 0.5,
driftline's estimate from the raw scores (as before calibration) and from the calibrated
ones, each averaged over ``--seeds`` draws of reference and window, and the largest
|estimate - realized| over the draws.

With ``--nannyml-python``, a Python that has NannyML installed (kept out of driftline's
dependencies: a throwaway venv; NannyML 0.13.1 also needs ``statsmodels``, which it does
not declare) runs NannyML's CBPE on the same data, fitted on the same reference, with the
whole window as one chunk.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from monitor.performance import ExpectedPerformance
from monitor.reference import build_profile

Array = NDArray[np.float64]
N = 20_000
THRESHOLD = 0.5


def sigmoid(z: Array) -> Array:
    out: Array = 1 / (1 + np.exp(-z))
    return out


MODELS: dict[str, Callable[[Array], Array]] = {
    "overconfident sigmoid(2x)": lambda x: sigmoid(2 * x),
    "misspecified sigmoid(.5+x+.5x^3)": lambda x: sigmoid(0.5 + x + 0.5 * x**3),
}
SHIFTS = {"none": (0.0, 1.0), "covariate N(0.7,1.3)": (0.7, 1.3)}

NANNYML_SCRIPT = """
import json, sys
import warnings
warnings.filterwarnings("ignore")
import nannyml as nml
import pandas as pd
data = json.load(sys.stdin)
out = []
for case in data:
    ref, live = pd.DataFrame(case["reference"]), pd.DataFrame(case["live"])
    for df in (ref, live):
        df["pred"] = (df["score"] >= case["threshold"]).astype(int)
    cbpe = nml.CBPE(
        y_pred_proba="score", y_pred="pred", y_true="y", metrics=["accuracy"],
        problem_type="classification_binary", chunk_number=1,
    )
    cbpe.fit(ref)
    res = cbpe.estimate(live[["score", "pred"]]).filter(period="analysis").to_df()
    out.append(float(res[("accuracy", "value")].iloc[0]))
print(json.dumps({"version": nml.__version__, "accuracy": out}))
"""


def sample(rng: np.random.Generator, mean: float, sd: float) -> tuple[Array, Array]:
    x = rng.normal(mean, sd, N)
    return x, (rng.random(N) < sigmoid(x)).astype(np.float64)


def accuracy(expected: ExpectedPerformance, score: Array) -> float:
    return expected.metrics(expected.accumulate(score))["accuracy"]


def run(seeds: int, nannyml_python: str | None) -> None:
    rows: list[dict[str, Any]] = []
    cases: list[dict[str, Any]] = []
    for model, f in MODELS.items():
        for shift, (mean, sd) in SHIFTS.items():
            for seed in range(seeds):
                rng = np.random.default_rng([seed, len(rows)])
                xr, yr = sample(rng, 0.0, 1.0)
                xl, yl = sample(rng, mean, sd)
                sr, sl = f(xr), f(xl)
                profile = build_profile(
                    "m", {"x": xr, "prediction": sr, "label": yr}, positive_label=1
                )
                plain = ExpectedPerformance(THRESHOLD)
                calibrated = ExpectedPerformance(THRESHOLD, calibration=profile.score_calibration)
                rows.append(
                    {
                        "model": model,
                        "shift": shift,
                        "realized": float(np.mean((sl >= THRESHOLD) == (yl == 1))),
                        "uncalibrated": accuracy(plain, sl),
                        "calibrated": accuracy(calibrated, sl),
                    }
                )
                cases.append(
                    {
                        "threshold": THRESHOLD,
                        "reference": {"score": sr.tolist(), "y": yr.astype(int).tolist()},
                        "live": {"score": sl.tolist()},
                    }
                )
    columns = ["uncalibrated", "calibrated"]
    note = "NannyML: not run (no --nannyml-python)"
    if nannyml_python:
        done = subprocess.run(
            [nannyml_python, "-c", NANNYML_SCRIPT],
            input=json.dumps(cases),
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise SystemExit(f"NannyML failed:\n{done.stderr}")
        result = json.loads(done.stdout.strip().splitlines()[-1])
        for row, value in zip(rows, result["accuracy"], strict=True):
            row["nannyml"] = value
        columns.append("nannyml")
        note = f"NannyML {result['version']} CBPE (isotonic calibration on the reference)"
    print(f"{seeds} draws of a {N}-row reference and a {N}-row window each; {note}")
    print("accuracy averaged over the draws; in brackets: mean bias, largest |bias|")
    head = f"{'model':34} {'shift':21} {'realized':>8}"
    print(head + "".join(f" {c:>22}" for c in columns))
    for model in MODELS:
        for shift in SHIFTS:
            mine = [r for r in rows if r["model"] == model and r["shift"] == shift]
            real = np.array([r["realized"] for r in mine])
            line = f"{model:34} {shift:21} {real.mean():8.3f}"
            for c in columns:
                est = np.array([r[c] for r in mine])
                worst = np.max(np.abs(est - real))
                line += f" {est.mean():8.3f} ({est.mean() - real.mean():+.3f}, {worst:.3f})"
            print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--nannyml-python", help="a Python with nannyml installed")
    args = parser.parse_args()
    run(args.seeds, args.nannyml_python)


if __name__ == "__main__":
    main()
