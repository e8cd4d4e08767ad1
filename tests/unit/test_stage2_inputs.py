"""Stage 2 against what reaches it: catch-ups, replays, other references, hostile records."""

from __future__ import annotations

import functools
import math
import tempfile
import zlib
from dataclasses import replace
from pathlib import Path

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.decoding import DecodedBatch
from consumers.pane_records import PaneRecordError, decode_update, encode_update
from consumers.service import Service
from monitor.config import DriftlineConfig
from monitor.events import EventBatch

PANE, SIZE = 10.0, 60.0


def config(ref: Path, **model: object) -> DriftlineConfig:
    return DriftlineConfig.model_validate(
        {
            "windows": {"pane": f"{PANE:g}s", "size": f"{SIZE:g}s", "allowed_lateness": "0s"},
            "models": [{"name": "m", "reference": {"path": str(ref)}, **model}],
        }
    )


def events(t: np.ndarray, rng: np.random.Generator, version: str | None = None) -> DecodedBatch:
    n = len(t)
    return DecodedBatch(
        batches={
            "m": EventBatch(
                model="m",
                event_time=np.asarray(t, dtype=float),
                event_id=[f"e{x}-{i}" for i, x in enumerate(t)],
                model_version=np.full(n, version, dtype=object),
                numerical={"x": rng.normal(size=n)},
                categorical={},
                score=np.full(n, np.nan),
                label=np.full(n, None, dtype=object),
                latency_ms=np.full(n, np.nan),
            )
        }
    )


@pytest.fixture
def ref(tmp_path: Path) -> Path:
    path = tmp_path / "ref.csv"
    rng = np.random.default_rng(0)
    path.write_text("x\n" + "\n".join(str(v) for v in rng.normal(size=2000)) + "\n")
    return path


def test_a_catch_up_publishes_the_panes_that_closed_and_expired_in_one_batch(ref):
    """Partition 1 is at 105 s; partition 0 catches up 0-1000 s in one batch. The merged
    window is (40, 100]: partition 0's panes 4-9 must reach stage 2 although they left
    its own window in the same move."""
    rng = np.random.default_rng(1)
    service = Service(config(ref))
    service.handle(events(np.arange(0, 106), rng), 1000.0, partition=1)
    service.handle(events(np.arange(0, 1001), rng), 1000.0, partition=0)
    ev = service.evaluation("m")
    assert ev is not None
    assert (ev.window_start, ev.window_end) == (40.0, 100.0)
    assert ev.window_events == 2 * 60


def test_a_replay_in_a_new_epoch_replaces_the_lost_history(ref):
    """A pane published before a crash, then the partition restored from an older
    checkpoint: the restored state (a new epoch) wins over the lost history's, even at
    lower offsets, and the replay brings it back to the same final answer."""
    rng = np.random.default_rng(2)
    service = Service(config(ref))
    first = events(np.arange(0, 300, 0.5), rng)
    service.handle(first, 1.0, partition=0, version=600)
    checkpoint = service.partition_state(0)
    service.handle(events(np.arange(300, 400, 0.5), rng), 2.0, partition=0, version=800)
    before = service.evaluation("m")
    # the same partition restored from the older checkpoint, with its history replayed
    service.restore_partition(0, checkpoint, now=5.0)
    restored = service.evaluation("m")
    assert restored is not None
    assert before is not None
    again = events(np.arange(300, 400, 0.5), np.random.default_rng(0))
    service.handle(again, 6.0, partition=0, version=800)
    after = service.evaluation("m")
    assert after is not None
    assert (after.window_start, after.window_end) == (before.window_start, before.window_end)
    assert after.window_events == before.window_events


def test_stream_references_of_one_version_from_two_instances_keep_the_first(ref):
    """Two instances each built their own reference of v1 (from different events): stage 2
    keeps the first one's panes and refuses the other's, counted; a v2 reference later
    replaces v1's."""
    rng = np.random.default_rng(3)
    cfg = config(ref, reference={"from_stream": {"events": 300}})
    a, b, owner = Service(cfg), Service(cfg), Service(cfg)
    a.handle(events(np.arange(0, 150, 0.25), rng, "v1"), 150.0, partition=0)
    b.handle(events(np.arange(0, 150, 0.25), rng, "v1"), 150.0, partition=1)
    ups_a = a.handle(events(np.arange(150, 300, 0.5), rng, "v1"), 300.0, partition=0)
    ups_b = b.handle(events(np.arange(150, 300, 0.5), rng, "v1"), 300.0, partition=1)
    assert ups_a[0].fingerprint != ups_b[0].fingerprint
    owner.apply_panes(0, ups_a, 300.0)
    owner.apply_panes(0, ups_b, 300.0)
    assert owner.owner.rejected["other_reference"] == len(ups_b)
    merged = owner.owner.units[0].models["m"]
    assert merged.fingerprint == ups_a[0].fingerprint
    assert sorted(merged.merge.sources) == [0]
    # a new model version's reference replaces it
    a.handle(events(np.arange(300, 375, 0.25), rng, "v2"), 375.0, partition=0)
    ups_v2 = a.handle(events(np.arange(375, 500, 0.5), rng, "v2"), 500.0, partition=0)
    owner.apply_panes(0, ups_v2, 500.0)
    assert owner.owner.units[0].models["m"].fingerprint == ups_v2[-1].fingerprint


@pytest.fixture
def published(ref):
    rng = np.random.default_rng(4)
    service = Service(config(ref))
    (update,) = service.handle(events(np.arange(0, 200, 0.5), rng), 200.0, partition=0)
    return service, update


def test_implausible_updates_are_refused_and_change_nothing(published):
    service, good = published
    before = service.evaluation("m")
    merge = service.owner.units[0].models["m"].merge

    def state() -> tuple:
        held = {k: v[0] for k, v in merge.panes.items()}
        return dict(merge.sources), held, merge.last_closed, merge.watermark

    kept = state()
    forged = [
        replace(good, last_closed=10**12),  # does not match the watermark
        replace(good, watermark=1e15, last_closed=math.floor(1e15 / PANE) - 1),  # far future
        replace(good, partition=7, active_at=1e18),  # "active" forever
        replace(good, epoch=10**17),  # an epoch that would lock the partition out
        replace(good, panes=((good.last_closed + 5, good.panes[0][1]),)),  # not closed yet
        replace(good, partition=9, last_closed=None, watermark=-math.inf, panes=good.panes),
    ]
    service.apply_panes(0, forged, 201.0)
    assert service.owner.rejected["implausible"] == len(forged)
    assert state() == kept
    after = service.evaluation("m")
    assert after is not None
    assert before is not None
    assert (after.window_start, after.window_end) == (before.window_start, before.window_end)
    assert after.window_events == before.window_events


def test_pane_vectors_that_do_not_fit_the_layout_are_refused(published):
    service, good = published
    index, pane = good.panes[0]
    short = replace(pane, counts=pane.counts[:-1], sums=pane.sums[:-1])
    service.apply_panes(0, [replace(good, version=10**6, panes=((index, short),))], 201.0)
    assert service.owner.rejected["malformed"] == 1


def _fields(good_blob: bytes) -> dict:
    return msgspec.msgpack.decode(zlib.decompress(good_blob))  # type: ignore[no-any-return]


junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.binary(max_size=8),
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(-(2**63), 2**63 - 1), max_size=2),
    st.just({"__ndarray__": "<i8", "shape": [3]}),
    st.just({"__ndarray__": "<f8", "shape": [2], "data": b"\x00" * 3}),
)


@functools.cache
def _good_record() -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ref.csv"
        path.write_text(
            "x\n" + "\n".join(str(v) for v in np.random.default_rng(0).normal(size=500))
        )
        service = Service(config(path))
        (update,) = service.handle(events(np.arange(0, 100, 0.5), np.random.default_rng(5)), 100.0)
    return encode_update(update, "g")


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_hostile_records_only_ever_raise_pane_record_error(data):
    fields = _fields(_good_record())
    key = data.draw(st.sampled_from([*sorted(fields), "panes.0", "panes.0.2"]))
    value = data.draw(junk)
    if key.startswith("panes."):
        pane = list(fields["panes"][0])
        if key == "panes.0":
            fields["panes"] = [value]
        else:
            pane[2] = value
            fields["panes"] = [pane]
    elif data.draw(st.booleans()):
        fields[key] = value
    else:
        del fields[key]
    blob = zlib.compress(msgspec.msgpack.encode(fields))
    if data.draw(st.booleans()):
        blob = data.draw(st.binary(max_size=64))
    try:
        source, update = decode_update(blob)
    except PaneRecordError:
        return
    assert isinstance(source, str)
    assert update.partition >= 0


def test_a_decompression_bomb_is_refused():
    bomb = zlib.compress(b"\x00" * (80 << 20), 9)
    with pytest.raises(PaneRecordError, match="inflates past"):
        decode_update(bomb)
