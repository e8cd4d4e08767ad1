"""Restoring a partition: whole or not at all, one error type whatever went wrong."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from consumers.checkpoints import RestoreError, decode_checkpoint, encode_checkpoint
from consumers.decoding import DecodedBatch
from consumers.service import Service
from monitor.config import DriftlineConfig
from monitor.events import EventBatch


def config(ref: Path, quantiles: int = 100, capacity: int = 1000) -> DriftlineConfig:
    return DriftlineConfig.model_validate(
        {
            "windows": {"pane": "10s", "size": "60s", "allowed_lateness": "0s"},
            "models": [
                {
                    "name": "m",
                    "reference": {"path": str(ref)},
                    "binning": {"quantiles": quantiles},
                    "labels": {"capacity": capacity},
                }
            ],
        }
    )


def batch(rng: np.random.Generator, n: int, t0: float) -> DecodedBatch:
    return DecodedBatch(
        batches={
            "m": EventBatch(
                model="m",
                event_time=np.sort(rng.uniform(t0, t0 + 200, n)),
                event_id=[f"e{t0}-{i}" for i in range(n)],
                model_version=np.full(n, None, dtype=object),
                numerical={"x": rng.normal(size=n)},
                categorical={},
                score=np.full(n, np.nan),
                label=np.full(n, None, dtype=object),
                latency_ms=np.full(n, np.nan),
            )
        }
    )


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Path, dict]:
    rng = np.random.default_rng(0)
    ref = tmp_path / "ref.csv"
    ref.write_text("x\n" + "\n".join(str(v) for v in rng.normal(size=2000)) + "\n")
    service = Service(config(ref))
    for p in range(2):
        service.handle(batch(rng, 1000, 0.0), now=200.0, partition=p)
    return ref, {p: service.partition_state(p) for p in range(2)}


def test_a_round_trip_restores_everything(filled):
    ref, states = filled
    fresh = Service(config(ref))
    for p, state in states.items():
        fresh.restore_partition(
            p, decode_checkpoint(encode_checkpoint({"state": state}))["state"], 201.0
        )
    assert fresh.snapshot().counters["m"].predictions == 2000
    ev = fresh.evaluation("m")
    assert ev is not None
    assert ev.window_events > 0


def test_another_binning_keeps_the_counters_and_restarts_the_windows(filled):
    ref, states = filled
    other = Service(config(ref, quantiles=20))
    for p in range(2):
        assert other.restore_partition(p, states[p], 201.0) == ["m"]
    # counted once, whatever the bins: the counters come back
    assert other.snapshot().counters["m"].predictions == 2000
    # the old panes do not fit the new bins: no window until new panes close
    assert other.evaluation("m") is None
    rng = np.random.default_rng(9)
    for p in range(2):
        other.handle(batch(rng, 500, 300.0), now=500.0, partition=p)
    ev = other.evaluation("m")
    assert ev is not None
    assert ev.window_start is not None
    assert ev.window_start >= 300.0 - 60.0


def test_a_replaced_reference_file_restarts_the_windows(filled, tmp_path):
    _, states = filled
    moved = tmp_path / "moved.csv"
    rng = np.random.default_rng(1)
    moved.write_text("x\n" + "\n".join(str(v) for v in rng.normal(3, 1, size=2000)) + "\n")
    fresh = Service(config(moved))
    assert fresh.restore_partition(0, states[0], 201.0) == ["m"]
    assert fresh.snapshot().counters["m"].predictions == 1000


def test_configured_label_capacity_wins_over_the_snapshot(filled):
    ref, states = filled
    smaller = Service(config(ref, capacity=10))
    smaller.restore_partition(0, states[0], 201.0)
    (join,) = smaller.inputs.joins("m")
    assert join.capacity == 10
    assert join.pending_predictions == 10
    assert join.dropped["prediction_evicted"] == 990  # counted, not lost silently


def test_corrupt_state_is_one_error_type(filled):
    ref, states = filled
    fresh = Service(config(ref))
    broken = dict(states[0])
    models = dict(broken["models"])
    monitor = dict(models["m"]["monitor"])
    window = dict(monitor["window"])
    window["closed"] = [
        [i, {**pane, "counts": pane["counts"][:-3]}] for i, pane in window["closed"]
    ]
    monitor["window"] = window
    models["m"] = {**models["m"], "monitor": monitor}
    broken["models"] = models
    with pytest.raises(RestoreError):
        fresh.restore_partition(0, broken, 201.0)
    with pytest.raises(RestoreError):
        fresh.restore_partition(0, {"models": {"m": {"join": None}}}, 201.0)
    with pytest.raises(RestoreError):
        decode_checkpoint(b"\x00not a checkpoint")
    assert fresh.inputs.partitions == []
    assert fresh.snapshot().counters["m"].predictions == 0


def test_unexpected_features_are_checkpointed_with_their_partition(tmp_path: Path):
    rng = np.random.default_rng(2)
    ref = tmp_path / "ref.csv"
    ref.write_text("x\n" + "\n".join(str(v) for v in rng.normal(size=500)) + "\n")
    service = Service(config(ref))
    for p, n in ((0, 3), (1, 4)):
        decoded = batch(rng, 10, 0.0)
        decoded.extra_features["m"] = Counter({"debug_flag": n})
        service.handle(decoded, now=200.0, partition=p)
    assert service.snapshot().unexpected_features == {("m", "debug_flag"): 7}
    state = decode_checkpoint(encode_checkpoint({"s": service.partition_state(1)}))["s"]
    fresh = Service(config(ref))
    fresh.restore_partition(1, state, 201.0)
    # only partition 1's count comes back: partition 0 is replayed from its own offsets
    assert fresh.snapshot().unexpected_features == {("m", "debug_flag"): 4}
    fresh.drop_partition(1, 202.0)
    assert fresh.snapshot().unexpected_features == {}
