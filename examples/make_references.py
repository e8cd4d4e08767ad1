"""Regenerate the examples' reference files, deterministically.

Each example's ``produce.py`` holds the simulated model (``simulate``); its reference is
3000 rows of the traffic before the drift, with the model's ``prediction`` and the true
``label``. Run from anywhere:

    python examples/make_references.py
"""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path
from types import ModuleType

import numpy as np

HERE = Path(__file__).resolve().parent
EXAMPLES = ("fraud", "regression")
ROWS = 3000
SEED = 0


def load_example(name: str) -> ModuleType:
    """The example's ``produce.py`` as a module (the examples are not a package)."""
    path = HERE / name / "produce.py"
    spec = importlib.util.spec_from_file_location(f"driftline_example_{name}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_reference(name: str) -> Path:
    example = load_example(name)
    rows = example.simulate(np.random.default_rng(SEED), ROWS, drifted=False)
    columns = [*example.FEATURES, "prediction", "label"]
    out = HERE / name / "reference.csv"
    with out.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows(zip(*(rows[c].tolist() for c in columns), strict=True))
    return out


def main() -> None:
    for name in EXAMPLES:
        out = write_reference(name)
        print(
            f"wrote {out.relative_to(HERE.parent)} ({out.stat().st_size // 1024} KB, {ROWS} rows)"
        )


if __name__ == "__main__":
    main()
