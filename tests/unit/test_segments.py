"""Segments: per-segment drift, quality and performance against numpy/scipy/scikit-learn on
the same events split by segment; bounded cardinality; mergeable, checkpointable state."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from scipy import stats
from sklearn import metrics as skm

from consumers.exporter import DriftlineCollector, StateSnapshot, evaluation_samples
from consumers.model_specs import ModelSpec, check_pane_bytes, load_reference
from consumers.model_specs import monitor_of as model_specs_monitor
from monitor.config import ModelSettings
from monitor.drift import jensenshannon
from monitor.events import EventBatch
from monitor.exceptions import ReferenceError
from monitor.label_join import LabelJoin
from monitor.model_state import ModelMonitor, WindowSpec
from monitor.pane_merge import PaneMerge, PaneUpdate
from monitor.panes import PaneCounts
from monitor.performance import ExpectedPerformance, accumulator_for
from monitor.reference import ReferenceProfile, build_profile
from monitor.segments import SegmentField, SegmentOptions

CATS = np.array(["a", "b", "c", "d"], dtype=object)
REGIONS = np.array(["eu", "us", "ap", "sa"], dtype=object)
ONE_PANE = WindowSpec(100.0, 100.0, 0.0)


def objects(values: Iterable[object]) -> np.ndarray:
    items = list(values)
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def reference(rng: np.random.Generator, n: int = 8000) -> dict[str, np.ndarray]:
    region = rng.choice(REGIONS, n, p=[0.4, 0.3, 0.2, 0.1])
    # each region its own distribution: a slice differs from the whole reference
    shift = np.select([region == "eu", region == "us"], [1.0, -1.0], 0.0)
    x = rng.normal(shift, 1.0)
    score = 1 / (1 + np.exp(-(x + rng.normal(0, 1, n))))
    label = (rng.random(n) < score).astype(int).astype(str).astype(object)
    return {
        "x": x,
        "c": rng.choice(CATS, n, p=[0.4, 0.3, 0.2, 0.1]),
        "tags.region": region,
        "prediction": score,
        "label": label,
    }


def profile_of(cols: dict[str, np.ndarray], options: SegmentOptions) -> ReferenceProfile:
    features = {k: v for k, v in cols.items() if k != "tags.region"}
    return options.apply(build_profile("m", features, positive_label="1"), cols)


def monitor_of(profile: ReferenceProfile) -> ModelMonitor:
    return ModelMonitor(
        profile,
        ONE_PANE,
        performance=accumulator_for("binary_classification", positive_label="1"),
        expected=ExpectedPerformance(0.5, calibration=profile.score_calibration),
    )


def live(rng: np.random.Generator, n: int) -> tuple[EventBatch, np.ndarray]:
    """A window of events (region mix shifted, ``x`` drifted in "ap") and their labels."""
    region = rng.choice(np.append(REGIONS, ["zz", None]), n, p=[0.2, 0.2, 0.3, 0.1, 0.1, 0.1])
    x = rng.normal(np.where(region == "ap", 1.5, 0.0), 1.0)
    x[rng.random(n) < 0.05] = np.nan
    score = 1 / (1 + np.exp(-(np.nan_to_num(x) + rng.normal(0, 1, n))))
    y = objects((rng.random(n) < score).astype(int).astype(str))
    batch = EventBatch(
        model="m",
        event_time=rng.uniform(0, 100, n),
        event_id=[f"e{i}" for i in range(n)],
        model_version=np.full(n, "v1", dtype=object),
        numerical={"x": x},
        categorical={"c": rng.choice(np.append(CATS, "new"), n)},
        score=score,
        label=np.full(n, None, dtype=object),
        latency_ms=np.full(n, np.nan),
        tags={"region": objects(region)},
    )
    return batch, y


def feed(monitor: ModelMonitor, batch: EventBatch, y: np.ndarray, labelled: np.ndarray) -> None:
    join = LabelJoin()
    monitor.ingest(batch)
    joined = join.add_predictions(
        batch.event_id,
        batch.event_time,
        batch.score,
        batch.label,
        batch.model_version,
        now=0.0,
        segment=monitor.segment_cells(batch),
    )
    assert len(joined) == 0
    at = np.flatnonzero(labelled)
    monitor.add_joined(
        join.add_labels([batch.event_id[i] for i in at], y[at], np.full(at.size, 50.0), now=0.0)
    )
    monitor.advance(100.0)


def members(field: SegmentField, column: np.ndarray) -> dict[str, np.ndarray]:
    """Each segment's events, computed without driftline: top values, then the rest."""
    out = {f"{field.name}={v}": column == v for v in field.values}
    out[f"{field.name}=other"] = ~np.isin(column, list(field.values))
    return out


@settings(max_examples=3, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_each_segment_equals_scipy_and_sklearn_on_its_own_events(seed: int) -> None:
    rng = np.random.default_rng(seed)
    cols = reference(rng)
    options = SegmentOptions(("tags.region", "c"), top_k=2, min_reference_events=100)
    profile = profile_of(cols, options)
    monitor = monitor_of(profile)
    batch, y = live(rng, 12000)
    labelled = rng.random(len(batch)) < 0.6
    feed(monitor, batch, y, labelled)
    ev = monitor.evaluate(now=1.0)
    assert profile.segments is not None
    region_field, c_field = profile.segments.fields
    assert region_field.values == ("eu", "us")
    assert c_field.values == ("a", "b")
    assert set(ev.segments) == {*region_field.labels, *c_field.labels}
    ref_region = cols["tags.region"]
    for field, live_col, ref_col in (
        (region_field, batch.tags["region"], ref_region),
        (c_field, batch.categorical["c"], cols["c"]),
    ):
        ref_members = members(field, ref_col)
        for name, mask in members(field, live_col).items():
            seg = ev.segments[name]
            assert seg.window_events == mask.sum()
            assert seg.reference_share == pytest.approx(ref_members[name].mean())
            x = batch.numerical["x"][mask]
            fx = seg.features[0]
            assert fx.missing_ratio == pytest.approx(np.isnan(x).mean())
            # against the reference rows of the same segment
            ref_x = cols["x"][ref_members[name]]
            scores = {s.method: s.score for s in fx.scores}
            present = x[~np.isnan(x)]
            assert scores["ks"] == pytest.approx(stats.ks_2samp(ref_x, present).statistic, abs=0.02)
            w = stats.wasserstein_distance(ref_x, present) / ref_x.std()
            assert scores["wasserstein"] == pytest.approx(w, abs=0.04)
            # performance on the segment's labelled events
            m = mask & labelled
            y_true, p = y[m] == "1", batch.score[m]
            assert seg.performance["accuracy"] == pytest.approx(
                skm.accuracy_score(y_true, p >= 0.5)
            )
            assert seg.performance["f1"] == pytest.approx(skm.f1_score(y_true, p >= 0.5))
            assert seg.performance["roc_auc"] == pytest.approx(
                skm.roc_auc_score(y_true, p), abs=0.01
            )
            assert seg.labelled_events == m.sum()
            assert seg.label_coverage == pytest.approx(m.sum() / mask.sum())
            assert seg.estimated["accuracy"] == pytest.approx(
                monitor.expected.metrics(monitor.expected.accumulate(batch.score[mask]))["accuracy"]
            )
        # the categorical feature c, segment by region: Jensen-Shannon on the slice's counts
        if field is region_field:
            for name, mask in members(field, live_col).items():
                fc = ev.segments[name].features[1]
                ref_c = cols["c"][ref_members[name]]
                cur_c = batch.categorical["c"][mask]
                ref_counts = [int((ref_c == k).sum()) for k in CATS] + [0]
                cur_counts = [int((cur_c == k).sum()) for k in CATS] + [int((cur_c == "new").sum())]
                assert fc.decision is not None
                assert fc.decision.score == pytest.approx(
                    jensenshannon(ref_counts, cur_counts), abs=1e-12
                )
    # the whole model is unchanged by segmenting it
    plain = monitor_of(replace(profile, segments=None))
    feed(plain, batch, y, labelled)
    assert replace(ev, segments={}, segment_mix={}) == plain.evaluate(now=1.0)
    # the mix: window shares of the region's segments against the reference's
    shares = [members(region_field, batch.tags["region"])[n].mean() for n in region_field.labels]
    ref_shares = [members(region_field, ref_region)[n].mean() for n in region_field.labels]
    assert ev.segment_mix["tags.region"].score == pytest.approx(
        jensenshannon(ref_shares, shares), abs=1e-12
    )


def test_a_segment_with_too_few_reference_rows_is_judged_against_the_whole_reference() -> None:
    rng = np.random.default_rng(3)
    cols = reference(rng)
    options = SegmentOptions(("tags.region",), top_k=4, min_reference_events=1000)
    profile = profile_of(cols, options)
    assert profile.segments is not None
    # "sa" has ~800 reference rows (< 1000): whole reference; "eu" ~3200: its slice
    slices = dict(zip(profile.segments.names, profile.segments.slices, strict=True))
    assert slices["tags.region=sa"] is None
    assert slices["tags.region=eu"] is not None
    monitor = monitor_of(profile)
    batch, y = live(rng, 6000)
    feed(monitor, batch, y, np.zeros(len(batch), dtype=bool))
    ev = monitor.evaluate(now=1.0)
    x = batch.numerical["x"][batch.tags["region"] == "sa"]
    ks = {s.method: s.score for s in ev.segments["tags.region=sa"].features[0].scores}["ks"]
    assert ks == pytest.approx(stats.ks_2samp(cols["x"], x[~np.isnan(x)]).statistic, abs=0.02)
    whole = SegmentOptions(("tags.region",), top_k=4, by_slice=False)
    assert profile_of(cols, whole).segments.slices == (None,) * 5  # type: ignore[union-attr]


def test_ten_thousand_distinct_values_export_at_most_k_plus_one_segments() -> None:
    rng = np.random.default_rng(4)
    cols = reference(rng)
    cols["tags.user"] = objects(f"u{i}" for i in rng.integers(0, 20000, len(cols["x"])))
    profile = profile_of(cols, SegmentOptions(("tags.user",), top_k=5))
    monitor = monitor_of(profile)
    batch, y = live(rng, 20000)
    batch.tags["user"] = objects(f"u{i}" for i in range(20000))  # 20 000 distinct values
    feed(monitor, batch, y, np.ones(len(batch), dtype=bool))
    ev = monitor.evaluate(now=1.0)
    samples = evaluation_samples({"m": ev})
    segments = {labels["segment"] for _, labels, _ in samples if "segment" in labels}
    assert len(segments) == 6
    assert "tags.user=other" in segments
    registry = CollectorRegistry()
    registry.register(DriftlineCollector(lambda: StateSnapshot("t", evaluations={"m": ev})))
    value = registry.get_sample_value(
        "driftline_segment_traffic_ratio", {"model": "m", "segment": "tags.user=other"}
    )
    known = sum(
        ev.segments[f"tags.user={v}"].window_events for v in profile.segments.fields[0].values
    )  # type: ignore[union-attr]
    assert value == pytest.approx(1 - known / len(batch))
    whole = registry.get_sample_value("driftline_window_events", {"model": "m"})
    assert whole == len(batch)


def test_segmented_panes_merge_across_partitions_and_restore() -> None:
    rng = np.random.default_rng(5)
    cols = reference(rng)
    profile = profile_of(cols, SegmentOptions(("tags.region", "c"), top_k=3))
    batch, y = live(rng, 4000)
    labelled = rng.random(len(batch)) < 0.5
    single = monitor_of(profile)
    feed(single, batch, y, labelled)
    merge = PaneMerge(100.0, 1, idle_timeout=60.0)
    part = rng.integers(0, 3, len(batch))
    for p in range(3):
        m = monitor_of(profile)
        keep = part == p
        feed(m, batch.select(keep), y[keep], labelled[keep])
        copy = monitor_of(profile)
        copy.restore(m.snapshot())  # a partition's state survives its checkpoint
        panes = copy.take_closed() or m.take_closed()
        merge.apply(PaneUpdate("m", p, 1, 100.0, 0, 0.0, m.layout.fingerprint, panes))
    merge.advance(now=1.0)
    window = merge.window(lambda: PaneCounts.zeros(single.pane_size, single.extra_size))
    got = single.evaluate_window(window, 1.0, single.window.watermark, (0.0, 100.0))
    want = single.evaluate(now=1.0)
    for name, seg in want.segments.items():
        assert got.segments[name].window_events == seg.window_events
        assert got.segments[name].performance == pytest.approx(seg.performance)
        for a, b in zip(got.segments[name].features, seg.features, strict=True):
            assert [s.score for s in a.scores] == pytest.approx([s.score for s in b.scores])


def test_profile_with_segments_reads_back_with_the_same_fingerprint() -> None:
    rng = np.random.default_rng(6)
    profile = profile_of(reference(rng), SegmentOptions(("tags.region",), top_k=2))
    again = ReferenceProfile.from_dict(profile.to_dict())
    assert again.to_dict() == profile.to_dict()
    assert monitor_of(again).layout.fingerprint == monitor_of(profile).layout.fingerprint
    plain = replace(profile, segments=None)
    assert monitor_of(plain).layout.fingerprint != monitor_of(profile).layout.fingerprint


def test_integer_values_sent_as_numbers_find_their_segment() -> None:
    field = SegmentField.from_reference("tier", objects(["1", "2", "1", "3"]), top_k=2)
    assert field.codes(objects([1, "1", 2, 3, None, 7.5])).tolist() == [0, 0, 1, 2, 2, 2]


def test_labels_pended_before_segmenting_count_for_the_whole_model_only() -> None:
    rng = np.random.default_rng(7)
    profile = profile_of(reference(rng), SegmentOptions(("tags.region",), top_k=2))
    monitor = monitor_of(profile)
    batch, y = live(rng, 500)
    monitor.ingest(batch)
    join = LabelJoin()
    join.add_predictions(
        batch.event_id, batch.event_time, batch.score, batch.label, batch.model_version, 0.0
    )
    monitor.add_joined(join.add_labels(batch.event_id, y, np.full(len(batch), 50.0), 0.0))
    monitor.advance(100.0)
    ev = monitor.evaluate(now=1.0)
    assert ev.labelled_events == len(batch)
    assert all(seg.labelled_events == 0 for seg in ev.segments.values())


def test_integer_codes_read_as_floats_from_a_file_match_live_integer_codes():
    # a CSV column of merchant codes with a gap is read as floats: 5411.0, not "5411"
    field = SegmentField.from_reference("mcc", np.array([5411.0, 5411.0, 1.0, np.nan]), 5)
    assert field.values == ("5411", "1")
    live = np.array([5411, "5411", 5411.0, 1, "1", "7"], dtype=object)
    assert field.codes(live).tolist() == [0, 0, 0, 1, 1, 2]  # 2 is "other"


def test_a_value_called_other_keeps_its_own_segment():
    column = np.array(["other", "other", "eu", "us", "ap"], dtype=object)
    field = SegmentField.from_reference("tags.region", column, 2)
    assert field.values == ("other", "ap")
    assert field.labels == ("tags.region=other", "tags.region=ap", "tags.region=(other)")
    assert len(set(field.labels)) == field.size
    live = np.array(["other", "ap", "eu", "zz"], dtype=object)
    assert field.codes(live).tolist() == [0, 1, 2, 2]


# -- the size of a segmented pane ------------------------------------------------------------


def _wide_reference(
    path: Path, features: int, fields: int, distinct: int, rows: int = 1500
) -> None:
    """A reference CSV of ``features`` numerical columns and ``fields`` categorical ones of
    ``distinct`` values each (every value frequent enough to be in a top-K)."""
    rng = np.random.default_rng(0)
    cols = {f"x{i}": rng.normal(size=rows).round(6).astype(str) for i in range(features)}
    cols |= {f"c{j}": rng.integers(0, distinct, rows).astype(str) for j in range(fields)}
    cols["prediction"] = rng.random(rows).round(6).astype(str)
    lines = [",".join(cols)] + [",".join(row) for row in zip(*cols.values(), strict=True)]
    path.write_text("\n".join(lines) + "\n")


def _sliced(path: Path, fields: int, top_k: int, cap: int | None = None) -> ModelSettings:
    segmenting: dict[str, Any] = {"top_k": top_k, "reference": "whole"}
    if cap is not None:
        segmenting["max_pane_bytes"] = cap
    return ModelSettings.model_validate(
        {
            "name": "m",
            "reference": {"path": str(path)},
            "features": {
                **{f"x{i}": {"type": "numerical"} for i in range(20)},
                **{f"c{j}": {"type": "categorical"} for j in range(fields)},
            },
            "segments": [f"c{j}" for j in range(fields)],
            "segmenting": segmenting,
            "kpis": {"p90": {"agg": "quantile", "field": "x0", "q": 0.9}},
        }
    )


def test_a_pane_is_sized_from_the_arrays_it_will_hold(tmp_path: Path) -> None:
    path = tmp_path / "ref.csv"
    _wide_reference(path, features=20, fields=2, distinct=12)
    settings_ = _sliced(path, fields=2, top_k=10)
    profile = load_reference(settings_)
    size = check_pane_bytes(settings_, profile)
    m = model_specs_monitor(settings_, profile, WindowSpec(60.0, 60.0, 0.0))
    assert m.blocks == 1 + 2 * 11
    pane = PaneCounts.zeros(m.pane_size, m.extra_size)  # what each pane of the window holds
    assert size == pane.counts.nbytes + pane.sums.nbytes + pane.extra.nbytes
    assert size < 8 << 20


def test_segments_whose_pane_would_be_huge_are_refused_naming_key_and_bytes(
    tmp_path: Path,
) -> None:
    # 20 features of ~100 bins, 4 fields of 100 segments + other: 405 copies of the bins
    path = tmp_path / "ref.csv"
    _wide_reference(path, features=20, fields=4, distinct=100, rows=4000)
    settings_ = _sliced(path, fields=4, top_k=100)
    profile = load_reference(settings_)
    huge = check_pane_bytes(replace_cap(settings_, 1 << 30), profile)  # the figure it reports
    assert huge > 8 << 20
    with pytest.raises(ReferenceError) as info:
        check_pane_bytes(settings_, profile)
    message = str(info.value)
    assert f"a pane would take {huge:,} bytes, over segmenting.max_pane_bytes (8,388,608)" in (
        message
    )
    assert "segments [c0, c1, c2, c3] with segmenting.top_k 100 make 404 segments" in message
    # the service refuses it at start, before calibrating anything
    with pytest.raises(ReferenceError, match=r"over segmenting\.max_pane_bytes"):
        ModelSpec(settings_, WindowSpec(60.0, 3600.0, 0.0))
    # a lower top_k fits
    assert check_pane_bytes(_sliced(path, fields=4, top_k=10), profile_for(path, 10)) < 8 << 20


def replace_cap(settings_: ModelSettings, cap: int) -> ModelSettings:
    segmenting = settings_.segmenting.model_copy(update={"max_pane_bytes": cap})
    return settings_.model_copy(update={"segmenting": segmenting})


def profile_for(path: Path, top_k: int) -> ReferenceProfile:
    return load_reference(_sliced(path, fields=4, top_k=top_k))
