"""Writes fraud-reference.json: the reference profile of the demo's fraud model.

    python deploy/kubernetes/reference.py

The shipped configurations (Kubernetes and docker-compose) run several replicas, so every
replica must bin against the same reference: a profile file, not one built from the
stream by each replica. This one is the demo's traffic before its drift (20 000 rows,
seed 0); replace it with `driftline reference build` on your own model's data.
tests/unit/test_deploy.py checks the committed file is what this script writes.
Importing this module has no side effects.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "fraud-reference.json"


def profile_json() -> str:
    from consumers.demo import simulate
    from monitor.reference import build_profile
    from monitor.schema import FeatureKind, FeatureSpec

    rows = simulate(np.random.default_rng(0), 20_000, drifted=False)
    rows["label"] = rows.pop("truth")
    num, cat = FeatureKind.NUMERICAL, FeatureKind.CATEGORICAL
    specs = [
        FeatureSpec("amount", num),
        FeatureSpec("age", num),
        FeatureSpec("country", cat),
        FeatureSpec("device", cat),
    ]
    profile = build_profile("fraud", rows, specs)
    return json.dumps(profile.to_dict(calibration=True), indent=1, allow_nan=True) + "\n"


def main() -> int:
    OUTPUT.write_text(profile_json(), encoding="utf-8")
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent.parent))
    raise SystemExit(main())
