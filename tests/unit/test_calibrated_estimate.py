"""Estimated performance through the reference's score calibration, against the realized
performance (scikit-learn) of miscalibrated binary models under covariate shift."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import sklearn.metrics as skm
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.cli import main
from consumers.model_specs import accumulators_of, load_reference
from monitor.config import ModelSettings
from monitor.events import EventBatch
from monitor.model_state import ModelMonitor, WindowSpec
from monitor.panes import CountLayout
from monitor.performance import ExpectedPerformance
from monitor.reference import ReferenceProfile, build_profile
from monitor.score_calibration import MAX_KNOTS, ScoreCalibration, fit_calibration

N = 20_000


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


#: P(y = 1 | x) = sigmoid(x); the models' scores are monotone in x but not that.
MODELS = {
    "overconfident": lambda x: sigmoid(2 * x),
    "misspecified": lambda x: sigmoid(0.5 + x + 0.5 * x**3),
}
SHIFTS = {"none": (0.0, 1.0), "covariate": (0.7, 1.3)}


def sample(seed: int, mean: float, sd: float, n: int = N) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(mean, sd, n)
    return x, (rng.random(n) < sigmoid(x)).astype(int)


def reference(model: str, seed: int = 1, n: int = N) -> ReferenceProfile:
    x, y = sample(seed, 0.0, 1.0, n)
    columns = {"x": x, "prediction": MODELS[model](x), "label": y}
    return build_profile("m", columns, positive_label=1)


def estimated(expected: ExpectedPerformance, score: np.ndarray) -> dict[str, float]:
    return expected.metrics(expected.accumulate(score))


def realized(y: np.ndarray, score: np.ndarray) -> dict[str, float]:
    pred = (score >= 0.5).astype(int)
    return {
        "accuracy": skm.accuracy_score(y, pred),
        "precision": skm.precision_score(y, pred),
        "recall": skm.recall_score(y, pred),
        "f1": skm.f1_score(y, pred),
        "roc_auc": skm.roc_auc_score(y, score),
    }


@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("model", MODELS)
def test_calibrated_estimate_is_within_two_points_of_the_realized(model, shift):
    profile = reference(model)
    assert profile.score_calibration is not None
    x, y = sample(2, *SHIFTS[shift])
    score = MODELS[model](x)
    truth = realized(y, score)
    got = estimated(ExpectedPerformance(0.5, calibration=profile.score_calibration), score)
    for metric in ("accuracy", "precision", "recall", "f1", "roc_auc"):
        assert abs(got[metric] - truth[metric]) <= 0.02, (metric, got[metric], truth[metric])


def test_a_monitors_window_reports_the_calibrated_estimate():
    profile = reference("overconfident")
    x, y = sample(2, *SHIFTS["covariate"])
    score = MODELS["overconfident"](x)
    n = x.size
    events = EventBatch(
        model="m",
        event_time=np.random.default_rng(3).uniform(0, 100, n),
        event_id=[str(i) for i in range(n)],
        model_version=np.full(n, "v1", dtype=object),
        numerical={"x": x},
        categorical={},
        score=score,
        label=np.full(n, None, dtype=object),
        latency_ms=np.full(n, np.nan),
        flags={},
    )
    evaluations = {}
    for name, calibration in (("calibrated", profile.score_calibration), ("raw", None)):
        expected = ExpectedPerformance(0.5, calibration=calibration)
        monitor = ModelMonitor(profile, WindowSpec(100.0, 100.0, 0.0), expected=expected)
        monitor.ingest(events)
        monitor.advance(100.0)
        evaluations[name] = monitor.evaluate(1.0)
    truth = realized(y, score)["accuracy"]
    calibrated, raw = evaluations["calibrated"], evaluations["raw"]
    assert abs(calibrated.estimated["accuracy"] - truth) <= 0.02
    assert raw.estimated["accuracy"] - truth > 0.05
    assert calibrated.to_dict()["performance"]["estimated_calibrated"] is True
    assert raw.to_dict()["performance"]["estimated_calibrated"] is False


@pytest.mark.parametrize("shift", SHIFTS)
@pytest.mark.parametrize("model", MODELS)
def test_uncalibrated_estimate_is_off(model, shift):
    """What the calibration corrects: taking these scores as probabilities overstates the
    accuracy by more than five points."""
    x, y = sample(2, *SHIFTS[shift])
    score = MODELS[model](x)
    got = estimated(ExpectedPerformance(0.5), score)
    assert got["accuracy"] - realized(y, score)["accuracy"] > 0.05


def test_a_calibrated_model_gains_nothing_and_loses_little():
    x, y = sample(1, 0.0, 1.0)
    profile = build_profile("m", {"x": x, "prediction": sigmoid(x), "label": y}, positive_label=1)
    xl, yl = sample(2, *SHIFTS["covariate"])
    score = sigmoid(xl)
    plain = estimated(ExpectedPerformance(0.5), score)["accuracy"]
    calibrated = estimated(ExpectedPerformance(0.5, calibration=profile.score_calibration), score)
    truth = realized(yl, score)["accuracy"]
    assert abs(plain - truth) <= 0.01
    assert abs(calibrated["accuracy"] - truth) <= 0.01


def test_labels_are_positive_as_the_configured_positive_label(tmp_path: Path):
    """A reference file with text labels, read as the service reads it: the calibration
    counts ``fraud`` as the positive class, whatever the other label is called."""
    x, y = sample(1, 0.0, 1.0, 5_000)
    path = tmp_path / "reference.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["x", "prediction", "label"])
        labels = np.where(y == 1, "fraud", "ok").tolist()
        w.writerows(zip(x.tolist(), sigmoid(2 * x).tolist(), labels, strict=True))
    settings = ModelSettings.model_validate(
        {"name": "m", "reference": {"path": str(path)}, "positive_label": "fraud"}
    )
    profile = load_reference(settings)
    assert profile.score_calibration is not None
    _, expected = accumulators_of(settings, profile)
    assert expected is not None
    assert expected.calibration is profile.score_calibration
    xl, yl = sample(2, *SHIFTS["covariate"], 5_000)
    score = sigmoid(2 * xl)
    got = estimated(expected, score)["accuracy"]
    assert abs(got - realized(yl, score)["accuracy"]) <= 0.02

    # the same calibration as from 0/1 labels with positive_label 1
    direct = build_profile(
        "m", {"x": x, "prediction": sigmoid(2 * x), "label": y}, positive_label=1
    )
    assert direct.score_calibration is not None
    assert np.allclose(direct.score_calibration.scores, profile.score_calibration.scores)
    assert np.array_equal(
        direct.score_calibration.probabilities, profile.score_calibration.probabilities
    )


def test_reference_build_keeps_the_calibration_or_says_why_not(tmp_path: Path, capsys):
    x, y = sample(1, 0.0, 1.0, 2_000)
    labelled = tmp_path / "labelled.csv"
    unlabelled = tmp_path / "unlabelled.csv"
    with labelled.open("w", newline="") as f, unlabelled.open("w", newline="") as g:
        a, b = csv.writer(f), csv.writer(g)
        a.writerow(["x", "prediction", "label"])
        b.writerow(["x", "prediction"])
        for xi, si, yi in zip(x.tolist(), sigmoid(2 * x).tolist(), y.tolist(), strict=True):
            a.writerow([xi, si, "true" if yi else "false"])
            b.writerow([xi, si])
    config = tmp_path / "driftline.yaml"
    config.write_text("models:\n  - name: m\n    reference: {path: labelled.csv}\n")
    out = tmp_path / "m.profile.json"
    args = ["reference", "build", "--config", str(config), "--model", "m", "--output"]
    assert main([*args, str(out), "--input", str(labelled)]) == 0
    stored = json.loads(out.read_text())["score_calibration"]
    assert stored["rows"] == 2_000
    assert stored["positives"] == int(y.sum())
    assert "no score calibration" not in capsys.readouterr().err
    assert main([*args, str(out), "--input", str(unlabelled)]) == 0
    assert "score_calibration" not in json.loads(out.read_text())
    assert "no score calibration: the reference has no 'label' column" in capsys.readouterr().err


def test_profile_round_trips_with_its_calibration():
    profile = reference("overconfident")
    cal = profile.score_calibration
    assert cal is not None
    assert 2 <= cal.scores.size <= MAX_KNOTS
    data = json.loads(json.dumps(profile.to_dict()))
    back = ReferenceProfile.from_dict(data)
    assert back.score_calibration is not None
    assert np.array_equal(back.score_calibration.scores, cal.scores)
    assert np.array_equal(back.score_calibration.probabilities, cal.probabilities)
    assert back.to_dict() == profile.to_dict()
    # deterministic: the same reference gives the same JSON, hence the same pane layout
    assert json.dumps(reference("overconfident").to_dict()) == json.dumps(profile.to_dict())
    assert CountLayout(back).fingerprint == CountLayout(reference("overconfident")).fingerprint


def test_profiles_without_calibration_say_why():
    x, y = sample(1, 0.0, 1.0, 1_000)
    columns = {"x": x, "prediction": sigmoid(x), "label": y}
    assert "score_calibration" not in build_profile("m", columns).to_dict()
    few = {k: v[:60] for k, v in columns.items()}
    assert "only 60 labelled" in str(build_profile("m", few, positive_label=1).uncalibrated_reason)
    one_class = {**columns, "label": np.ones(1_000, dtype=int)}
    reason = build_profile("m", one_class, positive_label=1).uncalibrated_reason
    assert "one class" in str(reason)
    unlabelled = {k: v for k, v in columns.items() if k != "label"}
    reason = build_profile("m", unlabelled, positive_label=1).uncalibrated_reason
    assert "no 'label' column" in str(reason)
    missing = {**columns, "label": np.array([None] * 950 + [1, 0] * 25, dtype=object)}
    reason = build_profile("m", missing, positive_label=1).uncalibrated_reason
    assert "only 50 labelled" in str(reason)
    # an old profile (no calibration stored) estimates from the raw scores, and says so
    old = ReferenceProfile.from_dict(build_profile("m", columns).to_dict())
    assert old.score_calibration is None
    assert "older driftline" in str(old.uncalibrated_reason)


def test_calibration_is_small_even_for_many_distinct_scores():
    rng = np.random.default_rng(3)
    s = rng.random(200_000)
    cal = fit_calibration(s, rng.random(200_000) < s**2)
    assert isinstance(cal, ScoreCalibration)
    assert cal.scores.size <= MAX_KNOTS
    probe = np.linspace(0.05, 0.95, 19)
    assert np.all(np.abs(cal.apply(probe) - probe**2) < 0.02)


@settings(max_examples=100, deadline=None)
@given(
    score=st.lists(
        st.floats(-1e6, 1e6, allow_nan=False) | st.sampled_from([0.0, 0.5, 1.0]),
        min_size=100,
        max_size=600,
    ),
    data=st.data(),
)
def test_calibration_map_is_monotone_and_a_probability(score, data):
    labels = data.draw(st.lists(st.booleans(), min_size=len(score), max_size=len(score)))
    cal = fit_calibration(score, labels, max_knots=data.draw(st.integers(2, 250)))
    if not isinstance(cal, ScoreCalibration):
        assert "one class" in cal
        return
    assert np.all(np.diff(cal.scores) > 0)
    assert np.all(np.diff(cal.probabilities) >= 0)
    probe = np.sort(np.r_[np.asarray(score), cal.scores, -math.inf, math.inf])
    p = cal.apply(probe)
    assert np.all((p >= 0) & (p <= 1))
    assert np.all(np.diff(p) >= 0)
    assert ScoreCalibration.from_dict(json.loads(json.dumps(cal.to_dict()))).to_dict() == (
        cal.to_dict()
    )


def test_scores_between_knots_a_subnormal_apart_stay_probabilities():
    # found by Hypothesis: with knots 5e-315 apart the interpolation's slope overflowed,
    # and a score of 0 between them came out as an infinite probability
    cal = ScoreCalibration(
        np.array([-5.06e-315, 5e-324, 1.0]), np.array([0.02, 0.05, 0.3]), 100, 10
    )
    p = cal.apply(np.array([0.0, -1e-320, np.nan]))
    assert np.all((p[:2] >= 0.02) & (p[:2] <= 0.05))
    assert np.isnan(p[2])
