"""Model versions side by side: a shadow challenger answering the same requests, a canary
with a reference of its own, and the bound on live versions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from consumers.decoding import DecodedBatch, GroundTruthBatch
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


def predictions(
    ids: list[str], t: np.ndarray, x: np.ndarray, score: np.ndarray, version: str | None
) -> DecodedBatch:
    n = len(ids)
    return DecodedBatch(
        batches={
            "m": EventBatch(
                model="m",
                event_time=np.asarray(t, dtype=float),
                event_id=list(ids),
                model_version=np.full(n, version, dtype=object),
                numerical={"x": np.asarray(x, dtype=float)},
                categorical={},
                score=np.asarray(score, dtype=float),
                label=np.full(n, None, dtype=object),
                latency_ms=np.full(n, np.nan),
            )
        }
    )


def labels(ids: list[str], y: np.ndarray, t: np.ndarray) -> GroundTruthBatch:
    y_true = np.empty(len(ids), dtype=object)
    y_true[:] = [str(v) for v in y]
    return GroundTruthBatch(labels={"m": (list(ids), y_true, np.asarray(t, dtype=float))})


@pytest.fixture
def ref(tmp_path: Path) -> Path:
    path = tmp_path / "ref.csv"
    rng = np.random.default_rng(0)
    x = rng.normal(size=3000)
    p = 1 / (1 + np.exp(-x))
    path.write_text(
        "x,prediction\n" + "\n".join(f"{a},{b}" for a, b in zip(x, p, strict=True)) + "\n"
    )
    return path


def _inside(ev, t: np.ndarray) -> np.ndarray:
    return (t >= ev.window_start) & (t < ev.window_end)


@pytest.mark.parametrize("labels_first", [False, True])
def test_a_shadow_challenger_and_its_champion_are_each_joined_to_the_one_ground_truth(
    ref, labels_first
):
    """Champion v1 and a shadow v2 predict the same requests (same event ids); one ground
    truth per request. Each version's realized performance equals scikit-learn on its own
    predictions; the model as served counts each request once (the champion's answer)."""
    rng = np.random.default_rng(1)
    n = 1500
    ids = [f"r{i}" for i in range(n)]
    t = np.arange(n) * 0.1
    x = rng.normal(size=n)
    truth = (rng.random(n) < 1 / (1 + np.exp(-2 * x))).astype(int)
    champion = 1 / (1 + np.exp(-(x + rng.normal(0, 1.5, n))))
    challenger = 1 / (1 + np.exp(-(2 * x + rng.normal(0, 0.5, n))))
    service = Service(config(ref))
    now = float(t[-1])
    if labels_first:
        service.handle_ground_truth(labels(ids, truth, t), now)
    for lo in range(0, n, 250):  # the two versions interleaved batch by batch
        s = slice(lo, lo + 250)
        service.handle(predictions(ids[s], t[s], x[s], champion[s], "v1"), now)
        service.handle(predictions(ids[s], t[s], x[s], challenger[s], "v2"), now)
    if not labels_first:
        service.handle_ground_truth(labels(ids, truth, t), now)
    service.apply_panes(0, service.flush(0, now), now)
    ev = service.evaluation("m")
    assert ev is not None
    assert sorted(ev.versions) == ["v1", "v2"]
    inside = _inside(ev, t)
    assert inside.sum() == 600
    for version, scores in (("v1", champion), ("v2", challenger)):
        v = ev.versions[version]
        assert v.model_version == version
        assert (v.window_start, v.window_end) == (ev.window_start, ev.window_end)
        assert v.window_events == inside.sum()
        assert v.labelled_events == inside.sum()
        y, s = truth[inside], scores[inside]
        assert v.performance["accuracy"] == pytest.approx(skm.accuracy_score(y, s >= 0.5))
        # the AUC is read off a score histogram: within 0.01 (see test_performance)
        assert v.performance["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s), abs=0.01)
        assert v.performance["brier"] == pytest.approx(skm.brier_score_loss(y, s))
        assert v.performance["log_loss"] == pytest.approx(skm.log_loss(y, s), rel=1e-6)
    # the model as served: every request once, judged on the champion's answers
    assert ev.window_events == inside.sum()
    assert ev.performance["accuracy"] == pytest.approx(
        skm.accuracy_score(truth[inside], champion[inside] >= 0.5)
    )
    assert ev.versions["v2"].performance["roc_auc"] > ev.versions["v1"].performance["roc_auc"]
    assert ev.serving_version == "v1"  # as many events as the shadow: the first by name
    c = service.inputs.counters()["m"]
    assert c.shadow == n
    assert c.unjoined["duplicate_prediction"] == 0
    # side by side on /metrics, with a model_version label
    samples = [
        (s.labels.get("model_version"), s.value)
        for family in service.registry.collect()
        if family.name == "driftline_model_performance"
        for s in family.samples
        if s.labels["metric"] == "roc_auc" and "segment" not in s.labels
    ]
    assert sorted(v for v, _ in samples if v) == ["v1", "v2"]
    assert len(samples) == 3


def test_a_redelivered_prediction_is_a_duplicate_not_a_shadow(ref):
    rng = np.random.default_rng(2)
    n = 400
    ids = [f"r{i}" for i in range(n)]
    t = np.arange(n) * 0.25
    x = rng.normal(size=n)
    service = Service(config(ref))
    now = float(t[-1])
    batch = predictions(ids, t, x, np.full(n, 0.5), "v1")
    service.handle(batch, now)
    service.handle(batch, now)
    c = service.inputs.counters()["m"]
    assert c.shadow == 0
    assert c.unjoined["duplicate_prediction"] == n
    service.apply_panes(0, service.flush(0, now), now)
    ev = service.evaluation("m")
    assert ev is not None
    assert not ev.versions
    assert ev.window_events == _inside(ev, t).sum()  # counted once


def test_live_versions_are_bounded_and_keep_their_places_until_they_retire(ref):
    """Versions beyond versions.live wait for a place instead of pushing the live ones
    out (which would empty every window); a stray version never takes one; a version
    silent for retire_after gives its place up, in both stages."""
    rng = np.random.default_rng(3)
    service = Service(config(ref, versions={"live": 3}))
    slot = None
    for step in range(6):
        t = step * 10.0 + np.arange(400) * 0.025
        parts = ["a", "b", "c", "d", "e"] if step else ["a", "b", "c"]
        for version in parts:
            ids = [f"{version}{step}-{j}" for j in range(400)]
            x, p = rng.normal(size=400), np.full(400, 0.5)
            service.handle(predictions(ids, t, x, p, version), 60.0 + step)
        stray = [f"stray{step}"]
        service.handle(predictions(stray, t[:1], x[:1], p[:1], f"stray{step}"), 60.0 + step)
        slot = service.inputs._slots[0]["m"]
        assert list(slot.live) == ["a", "b", "c"]
    assert slot is not None
    assert sorted(slot.versions) == ["a", "b", "c"]
    # never emptied (its window began with its second batch, when b became live)
    assert slot.versions["a"].predictions == 5 * 400
    assert len(slot.candidates) <= 64
    service.apply_panes(0, service.flush(0, 66.0), 66.0)
    ev = service.evaluation("m")
    assert ev is not None
    assert sorted(ev.versions) == ["a", "b", "c"]
    # the version with most events serves (a's window began with its second batch)
    assert ev.serving_version == "b"
    # a, b and c stop; d and e go on and take their places once they retire
    later = 66.0 + SIZE + 1
    for round_ in range(2):  # d's own window begins once e is live too
        for version in ("d", "e"):
            t = 60.0 + round_ * 10 + np.arange(400) * 0.025
            ids = [f"{version}-late{round_}-{j}" for j in range(400)]
            service.handle(predictions(ids, t, rng.normal(size=400), p, version), later)
    service.apply_panes(0, service.flush(0, later), later)
    assert list(slot.live) == ["d", "e"]
    assert sorted(slot.versions) == ["d", "e"]
    assert sorted(service.owner.units[0].versions["m"]) == ["d", "e"]
    assert service.owner.rejected["version_limit"] == 0
    service.tick(later + SIZE + 1)  # no partition spoke of them since
    assert not service.owner.units[0].versions["m"]


def test_a_version_seen_in_one_partition_only_still_has_every_partition_counted(ref):
    """v1 serves two partitions; a shadow v2 reaches partition 0 only: v1's own window
    still counts the events of both partitions."""
    rng = np.random.default_rng(7)
    service = Service(config(ref))
    n = 1200
    t = np.arange(n) * 0.1
    for partition in (0, 1):
        ids = [f"p{partition}-{i}" for i in range(n)]
        x, p = rng.normal(size=n), rng.random(n)
        for lo in range(0, n, 300):
            s = slice(lo, lo + 300)
            service.handle(predictions(ids[s], t[s], x[s], p[s], "v1"), 120.0, partition)
            if partition == 0:
                service.handle(predictions(ids[s], t[s], x[s], p[s], "v2"), 120.0, partition)
    service.apply_panes(0, service.flush(0, 120.0) + service.flush(1, 120.0), 120.0)
    ev = service.evaluation("m")
    assert ev is not None
    assert ev.versions["v1"].window_events == ev.window_events == 2 * 600
    assert ev.versions["v2"].window_events == 600
    assert ev.serving_version == "v1"


def test_a_missing_or_empty_version_gets_no_window_of_its_own(ref):
    service = Service(config(ref))
    rng = np.random.default_rng(4)
    for version in (None, "", "v1"):
        ids = [f"{version}-{j}" for j in range(150)]
        t = np.arange(150) * 0.1
        service.handle(predictions(ids, t, rng.normal(size=150), np.full(150, 0.5), version), 5.0)
    assert list(service.inputs._slots[0]["m"].live) == ["v1"]


def stream_config(ref: Path, **model: object) -> DriftlineConfig:
    return config(ref, reference={"from_stream": {"events": 300}}, **model)


def test_a_canary_never_replaces_the_reference_of_the_version_still_serving(ref):
    """v1 builds the model's reference from the stream; a canary v2 whose inputs moved
    builds its own. The model and v1 keep v1's reference and v1 is judged exactly as
    without the canary; v2 is judged against its own; the model as served sees the move.
    Once v1 is retired, the model's reference moves to v2."""
    rng = np.random.default_rng(5)

    def run(canary: bool) -> Service:
        rng = np.random.default_rng(5)
        service = Service(stream_config(ref))
        t = np.arange(0, 300, 0.1)
        x = rng.normal(size=t.size)
        v1 = [f"a{i}" for i in range(t.size)]
        for lo in range(0, t.size, 200):
            s = slice(lo, lo + 200)
            now = float(t[s][-1])
            service.handle(predictions(v1[s], t[s], x[s], np.full(200, 0.5), "v1"), now)
            if canary and t[lo] >= 60:  # from 60 s, a third as many events of a moved v2
                m = 70
                tc = t[s][-m:] + 0.05  # in the panes the champion holds open
                xc = rng.normal(2.0, 1.0, m)
                ids = [f"c{lo}-{j}" for j in range(m)]
                service.handle(predictions(ids, tc, xc, np.full(m, 0.5), "v2"), now)
        service.apply_panes(0, service.flush(0, 300.0), 300.0)
        return service

    alone, both = run(canary=False), run(canary=True)
    spec = both.specs["m"]
    assert spec.profile is not None
    assert spec.profile.model_version == "v1"
    assert spec.version_profiles["v2"].model_version == "v2"
    ev, base = both.evaluation("m"), alone.evaluation("m")
    assert ev is not None
    assert base is not None
    v1 = ev.versions["v1"]
    # v1's own window: the same events, the same reference, the same verdicts
    assert v1.window_events == base.window_events
    assert [(f.name, f.drifted, f.scores) for f in v1.features] == [
        (f.name, f.drifted, f.scores) for f in base.features
    ]
    assert v1.features[0].drifted is False
    v2 = ev.versions["v2"]
    assert v2.features[0].drifted is False  # against its own reference
    assert v2.window_events > 0
    # the model as served, against v1's reference, sees the canary's moved inputs
    assert ev.window_events == v1.window_events + v2.window_events
    assert ev.features[0].drifted is True
    # v1 stops; once retired everywhere, the model's reference is v2's (windows restart)
    later = 300.0 + SIZE + 1
    t = np.arange(300, 320, 0.1)
    ids = [f"late{i}" for i in range(t.size)]
    both.handle(
        predictions(ids, t, rng.normal(2.0, 1.0, t.size), np.full(t.size, 0.5), "v2"), later
    )
    both.flush(0, later)
    assert spec.profile.model_version == "v2"


def test_versions_survive_a_restore_of_both_stages(ref):
    rng = np.random.default_rng(6)
    n = 900
    ids = [f"r{i}" for i in range(n)]
    t = np.arange(n) * 0.1
    x = rng.normal(size=n)
    truth = rng.integers(0, 2, n)
    service = Service(config(ref))
    now = float(t[-1])
    for lo in range(0, n, 300):
        s = slice(lo, lo + 300)
        service.handle(predictions(ids[s], t[s], x[s], rng.random(300), "v1"), now)
        service.handle(predictions(ids[s], t[s], x[s], rng.random(300), "v2"), now)
    service.handle_ground_truth(labels(ids[: n // 2], truth[: n // 2], t[: n // 2]), now)
    service.apply_panes(0, service.flush(0, now), now)
    before = service.evaluation("m")
    state, unit = service.partition_state(0), service.unit_state(0)
    again = Service(config(ref))
    again.restore_partition(0, state, now)
    again.restore_unit(0, unit, now)
    # the rest of the labels join both versions' restored predictions
    rest = slice(n // 2, n)
    for s in (service, again):
        s.handle_ground_truth(labels(ids[rest], truth[rest], t[rest]), now)
        s.apply_panes(0, s.flush(0, now), now)
    a, b = service.evaluation("m"), again.evaluation("m")
    assert a is not None
    assert b is not None
    assert before is not None
    assert sorted(b.versions) == ["v1", "v2"]
    for v in ("v1", "v2"):
        assert b.versions[v].labelled_events == a.versions[v].labelled_events > 0
        assert b.versions[v].performance == a.versions[v].performance
