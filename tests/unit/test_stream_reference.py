"""A reference built from the first N events of each model version, through the service."""

from __future__ import annotations

import json

import numpy as np
import pytest

from consumers.service import Service
from monitor.config import DriftlineConfig
from monitor.events import EventBatch
from monitor.schema import FeatureKind
from monitor.stream_reference import StreamReference


def batch(n: int, version: str, shift: float = 0.0, seed: int = 0) -> EventBatch:
    rng = np.random.default_rng(seed)
    x = np.empty(n, dtype=object)
    x[:] = rng.normal(shift, 1.0, n).tolist()
    c = np.empty(n, dtype=object)
    c[:] = rng.choice(["a", "b"], n).tolist()
    return EventBatch(
        model="m",
        event_time=np.arange(n, dtype=np.float64),
        event_id=[f"{version}-{i}" for i in range(n)],
        model_version=np.full(n, version, dtype=object),
        numerical={},
        categorical={"x": x, "c": c},  # untyped: the schema is not known yet
        score=rng.random(n),
        label=np.full(n, None, dtype=object),
        latency_ms=np.full(n, np.nan),
    )


def test_versions_starting_together_are_collected_together_in_bounded_places():
    """A shadow challenger and a canary starting at once each get a reference; a third
    new version waits for a place, and a version gone idle gives its place up."""
    ref = StreamReference("m", events=100, concurrent=2, idle=60.0)
    mixed = EventBatch.concat([batch(60, "v2"), batch(60, "v3"), batch(60, "v4")])
    taken, done = ref.take(mixed, now=0.0)
    assert done == []
    assert taken.tolist() == [True] * 120 + [False] * 60
    assert ref.collecting == ("v2", "v3")
    taken, done = ref.take(EventBatch.concat([batch(60, "v2"), batch(60, "v3")]), now=1.0)
    assert sorted(p.model_version for p in done) == ["v2", "v3"]
    assert taken.sum() == 80
    ref.take(batch(10, "v5"), now=2.0)
    ref.take(batch(10, "v6"), now=2.0)
    assert ref.take(batch(10, "v7"), now=3.0)[0].sum() == 0  # no place
    assert ref.take(batch(10, "v7"), now=100.0)[0].all()  # v5 and v6 went idle
    assert ref.collecting == ("v7",)


def test_first_n_events_of_each_version_become_its_reference():
    ref = StreamReference("m", events=500)
    taken, done = ref.take(batch(300, "v1"))
    assert taken.all()
    assert done == []
    assert ref.collected == 300
    taken, (profile,) = ref.take(batch(300, "v1", seed=1))
    assert taken.sum() == 200  # only as many as the reference still needs
    assert profile.n_events == 500
    assert profile.model_version == "v1"
    assert {f.name: f.kind for f in profile.features} == {
        "x": FeatureKind.NUMERICAL,
        "c": FeatureKind.CATEGORICAL,
    }
    assert profile.prediction is not None
    # the same version is not collected again; a new one is
    assert not ref.take(batch(10, "v1"))[0].any()
    assert ref.take(batch(10, "v2"))[0].all()


def event(i: int, version: str, x: float) -> bytes:
    return json.dumps(
        {
            "event_id": f"{version}-{i}",
            "model": "m",
            "model_version": version,
            "timestamp": 1000.0 + i * 0.1,
            "features": {"x": x, "c": "a" if i % 2 else "b"},
            "prediction": 0.5,
        }
    ).encode()


def test_service_builds_the_reference_from_the_stream_and_checkpoints_it():
    config = DriftlineConfig.model_validate(
        {
            "windows": {"pane": "10s", "size": "60s", "allowed_lateness": "0s"},
            "models": [{"name": "m", "reference": {"from_stream": {"events": 400}}}],
        }
    )
    service = Service(config)
    service.assigned = service.kafka_connected = True
    ready, reasons = service.readiness()
    assert not ready
    assert "0/400" in reasons[0]
    rng = np.random.default_rng(2)
    values = [event(i, "v1", float(rng.normal())) for i in range(1000)]
    decoded = service.decoder.decode(values, [0.0] * len(values))
    assert decoded.invalid == []
    service.handle(decoded, now=1100.0)
    assert service.readiness() == (True, [])
    counters = service.snapshot().counters["m"]
    assert counters.predictions == 1000  # the 400 taken for the reference count as consumed
    (slot,) = service.inputs._slots[0].values()
    assert slot.monitor is not None
    assert slot.monitor.events_total == 600  # the rest are windowed against the new reference
    ev = service.evaluation("m")
    assert ev is not None
    assert ev.window_events > 0
    x = next(f for f in ev.features if f.name == "x")
    assert x.missing_ratio == 0.0  # typed as numbers, not lost as missing values
    assert x.type_mismatch_ratio == 0.0
    # from now on events decode on the typed fast path of the inferred schema
    later = service.decoder.decode([event(2000, "v1", 0.3)], [0.0])
    assert later.batches["m"].numerical["x"].tolist() == [0.3]

    # a checkpoint carries the stream-built reference to a fresh service
    state = service.partition_state(0)
    fresh = Service(config)
    fresh.restore_partition(0, state, now=6.0)
    assert fresh.snapshot().counters["m"].predictions == 1000
    profile, built = fresh.specs["m"].profile, service.specs["m"].profile
    assert profile is not None
    assert built is not None
    assert profile.to_dict() == built.to_dict()
    assert fresh.decoder.decode([event(1, "v1", 0.1)], [0.0]).batches["m"].numerical[
        "x"
    ].tolist() == [pytest.approx(0.1)]


def test_junk_keys_of_a_few_events_do_not_become_features():
    """One early event with 3 000 junk keys and a 500-character name: the inferred schema
    keeps the real features only (was 3 002 features and 15 000 series)."""
    from monitor.stream_reference import MAX_INFERRED_FEATURES

    b = batch(500, "v1")
    for j in range(3000):
        col = np.full(500, None, dtype=object)
        col[0] = j
        b.categorical[f"junk{j}"] = col
    long_name = np.empty(500, dtype=object)
    long_name[:] = ["v"] * 500
    b.categorical["n" * 500] = long_name  # present everywhere, but no name for a label
    (profile,) = StreamReference("m", events=500).take(b)[1]
    assert {f.name for f in profile.features} == {"x", "c"}
    # many real features: the most present ones are kept, up to the cap
    wide = batch(500, "v1")
    for j in range(MAX_INFERRED_FEATURES + 50):
        col = np.empty(500, dtype=object)
        col[:] = [float(j)] * (500 - j) + [None] * j  # fewer values for later ones
        wide.categorical[f"f{j:03d}"] = col
    (profile,) = StreamReference("m", events=500).take(wide)[1]
    assert len(profile.features) == MAX_INFERRED_FEATURES
    assert "x" in {f.name for f in profile.features}
    assert "f249" not in {f.name for f in profile.features}


def test_a_stream_reference_takes_its_segments_from_the_collected_events():
    from monitor.segments import SegmentOptions

    options = SegmentOptions(("tags.region", "c"), top_k=1, min_reference_events=50)
    ref = StreamReference("m", events=400, segments=options)
    b = batch(400, "v1")
    region = np.empty(400, dtype=object)
    region[:] = ["eu"] * 300 + ["us"] * 60 + [None] * 40
    b.tags = {"region": region}
    (profile,) = ref.take(b)[1]
    assert profile.segments is not None
    assert profile.segments.names[:2] == ("tags.region=eu", "tags.region=other")
    assert profile.segments.reference_share[:2] == (0.75, 0.25)
    assert [f.name for f in profile.features] == ["x", "c"]  # a tag is no feature
    # each slice is counted in the whole profile's bins
    eu = profile.segments.slices[0]
    assert eu is not None
    assert int(eu[0][0].counts.sum()) == 300
