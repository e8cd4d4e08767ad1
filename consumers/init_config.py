"""``driftline init``: a commented configuration for one model, from its reference file.

The features and their types are inferred the way the service infers them; what the file
lacks is said plainly, in the file and on the terminal, so nothing is silently off.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from monitor.reference import PREDICTION
from monitor.schema import FeatureKind, infer_kind

__all__ = ["InitResult", "init_config"]

#: columns the service reads for something else than a feature
_ROLES = {
    PREDICTION: "the model's output (prediction drift, estimated performance)",
    "label": "the ground truth (realized performance on the reference)",
    "event_id": "an identifier: ignored",
    "timestamp": "a time: ignored",
    "model_version": "a version: ignored",
}


@dataclass
class InitResult:
    """The configuration text and what a user should know about it."""

    text: str
    notes: list[str] = field(default_factory=list)


def _numeric_looking(values: NDArray[Any]) -> tuple[float, list[str]]:
    """Share of non-missing strings that parse as numbers, and a few that do not."""
    present = [v for v in values.tolist() if v is not None]
    bad: list[str] = []
    good = 0
    for v in present:
        try:
            float(v)
            good += 1
        except (TypeError, ValueError):
            if len(bad) < 3 and v not in bad:
                bad.append(str(v)[:20])
    return (good / len(present) if present else 0.0), bad


def _task(label: NDArray[Any] | None) -> str:
    if label is None:
        return "binary_classification"
    present = label[~np.isnan(label)] if label.dtype.kind == "f" else label[label != None]  # noqa: E711
    distinct = len(set(present.tolist()))
    if distinct <= 2:
        return "binary_classification"
    if label.dtype.kind == "f" and distinct > 20:
        return "regression"
    return "multiclass_classification"


def init_config(
    columns: Mapping[str, NDArray[Any]],
    reference: Path,
    model: str,
    output: Path,
    task: str | None = None,
) -> InitResult:
    """The text of a ``driftline.yaml`` for ``model`` whose reference data is ``columns``
    (read from ``reference``), to be written at ``output``."""
    notes: list[str] = []
    features: list[tuple[str, FeatureKind, str]] = []
    ignored: list[str] = []
    for name, values in columns.items():
        if name in _ROLES:
            if name not in (PREDICTION, "label"):
                ignored.append(name)
            continue
        kind = infer_kind(values)
        comment = ""
        if kind is FeatureKind.CATEGORICAL and values.dtype == object:
            share, bad = _numeric_looking(values)
            if share >= 0.9:
                comment = f"looks numeric but has text values ({', '.join(map(repr, bad))})"
                notes.append(
                    f"column {name!r} {comment}: typed categorical; clean the file, or set "
                    "its type to numerical (text values then count as type mismatches)"
                )
        n_missing = int(
            np.isnan(values).sum() if values.dtype.kind == "f" else (values == None).sum()  # noqa: E711
        )
        if n_missing == len(values):
            notes.append(f"column {name!r} is empty: left out")
            ignored.append(name)
            continue
        features.append((name, kind, comment))
    label = columns.get("label")
    prediction = columns.get(PREDICTION)
    chosen = task or _task(label)
    if prediction is None:
        notes.append(
            f"no {PREDICTION!r} column: prediction drift and estimated performance will be "
            "off; add the model's output (a score for classifiers) to the reference"
        )
    if label is None:
        notes.append(
            "no 'label' column: fine for drift; realized performance comes from ground-truth "
            "events, and the reference gives no performance baseline"
        )
    if not features:
        notes.append("no feature columns found: only the prediction can be monitored")
    ref_path = Path(os.path.relpath(reference.resolve(), output.resolve().parent))
    if ref_path.parts[:2] == ("..", ".."):  # far from the config's directory: say where
        ref_path = reference.resolve()
    lines = [
        f"# driftline configuration for {model!r}, written by `driftline init` from",
        f"# {reference} ({len(next(iter(columns.values()), []))} rows).",
        "# Check it with: driftline check-config --config " + output.name,
        "",
        "kafka:",
        "  bootstrap_servers: localhost:9092",
        "  predictions_topic: driftline.predictions",
        "  ground_truth_topic: driftline.ground-truth",
        "  # a stalled poll loop rebalances after 10 s; the embedded broker (`driftline broker`)",
        "  # also holds a group's first join this long",
        "  consumer: {max_poll_interval_ms: 10000}",
        "http: {host: 127.0.0.1, port: 9108}",
        "# panes close allowed_lateness after their end; the live window is the last size/pane",
        "windows: {pane: 60s, size: 1h, allowed_lateness: 5m}",
        "state: {dir: ./state}   # relative to where `driftline run` is started",
        "models:",
        f"  - name: {model}",
        f"    task: {chosen}",
    ]
    if chosen == "binary_classification" and label is not None:
        seen = sorted({str(v) for v in label.tolist() if v is not None and v == v})
        positive = seen[-1] if seen else "1"
        if label.dtype.kind == "f" and positive.endswith(".0"):
            positive = positive[:-2]
        lines.append(f'    positive_label: "{positive}"   # 1, 1.0, "1" and true are one class')
    lines += [
        f"    reference: {{path: {ref_path.as_posix()}}}"
        + ("" if ref_path.is_absolute() else "   # relative to this file"),
        "    features:",
    ]
    for name, kind, comment in features:
        suffix = f"   # {comment}" if comment else ""
        lines.append(f"      {name}: {{type: {kind.value}}}{suffix}")
    used = [c for c in (PREDICTION, "label") if c in columns]
    lines += [
        "",
        f"# columns used: features {', '.join(n for n, _, _ in features) or '(none)'}"
        + (f"; also {', '.join(used)}" if used else ""),
    ]
    if ignored:
        lines.append(f"# columns ignored: {', '.join(ignored)}")
    lines += [f"# NOTE: {n}" for n in notes]
    return InitResult("\n".join(lines) + "\n", notes)
