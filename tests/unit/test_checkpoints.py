"""Checkpoint format, stores, and that a restored monitor continues exactly."""

from __future__ import annotations

import numpy as np
import pytest

from consumers.checkpoints import (
    CheckpointError,
    DirectoryStore,
    decode_checkpoint,
    encode_checkpoint,
)
from monitor.events import EventBatch
from monitor.model_state import ModelMonitor, WindowSpec
from monitor.reference import build_profile


def test_round_trip_keeps_arrays_and_types():
    state = {
        "offset": 42,
        "a": np.arange(5, dtype=np.int64),
        "b": np.linspace(0, 1, 7),
        "nested": [{"x": np.zeros((2, 3))}, None, "text", float("-inf")],
    }
    back = decode_checkpoint(encode_checkpoint(state))
    assert back["offset"] == 42
    assert back["a"].dtype == np.int64
    assert back["a"].tolist() == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(back["b"], state["b"])
    assert back["nested"][0]["x"].shape == (2, 3)
    assert back["nested"][3] == float("-inf")


def test_other_formats_are_refused_clearly():
    import zlib

    import msgspec

    old = zlib.compress(msgspec.msgpack.encode({"format": "driftline.checkpoint/v0"}))
    with pytest.raises(CheckpointError, match=r"driftline\.checkpoint/v1"):
        decode_checkpoint(old)
    with pytest.raises(CheckpointError, match="unreadable"):
        decode_checkpoint(b"garbage")


def test_directory_store_keeps_the_newest(tmp_path):
    store = DirectoryStore(tmp_path, keep=2)
    assert store.load("g/t/0") is None
    for i in range(5):
        store.save("g/t/0", f"v{i}".encode())
    assert store.load("g/t/0") == b"v4"
    files = sorted((tmp_path / "g" / "t" / "0").iterdir())
    assert [f.name for f in files] == ["checkpoint-000000000004.bin", "checkpoint-000000000005.bin"]
    assert not list(tmp_path.rglob("*.tmp"))


def _batches(rng, n_batches=12, size=300):
    for b in range(n_batches):
        t = np.sort(rng.uniform(b * 10, b * 10 + 25, size))
        yield EventBatch(
            model="m",
            event_time=t,
            event_id=[f"{b}-{i}" for i in range(size)],
            model_version=np.full(size, None, dtype=object),
            numerical={"x": rng.normal(size=size)},
            categorical={"c": rng.choice(np.array(["a", "b", "z"], dtype=object), size)},
            score=rng.random(size),
            label=np.full(size, None, dtype=object),
            latency_ms=rng.gamma(2, 2, size),
        )


def test_a_restored_monitor_continues_exactly_like_an_uninterrupted_one():
    rng = np.random.default_rng(0)
    profile = build_profile(
        "m",
        {
            "x": rng.normal(size=1000),
            "c": rng.choice(np.array(["a", "b"], dtype=object), 1000),
            "prediction": rng.random(1000),
        },
    )
    spec = WindowSpec(5.0, 30.0, 3.0)
    batches = list(_batches(np.random.default_rng(1)))
    straight = ModelMonitor(profile, spec)
    for b in batches:
        straight.ingest(b)
    resumed = ModelMonitor(profile, spec)
    for b in batches[:5]:
        resumed.ingest(b)
    blob = encode_checkpoint({"state": resumed.snapshot()})
    resumed = ModelMonitor(profile, spec)
    resumed.restore(decode_checkpoint(blob)["state"])
    for b in batches[5:]:
        resumed.ingest(b)
    assert resumed.events_total == straight.events_total
    assert resumed.late_total == straight.late_total
    assert resumed.window.window.counts.tolist() == straight.window.window.counts.tolist()
    np.testing.assert_allclose(resumed.window.window.sums, straight.window.window.sums)
    assert sorted(resumed.window.open) == sorted(straight.window.open)
    a, b = resumed.evaluate(1.0), straight.evaluate(1.0)
    assert [f.decision.score for f in a.features] == pytest.approx(
        [f.decision.score for f in b.features]
    )
    assert resumed.latency_buckets.tolist() == straight.latency_buckets.tolist()
