"""Repeated evaluation: runs of flagged evaluations on a sliding window start at the rate
monitor.repeated says, and the default policy bounds them to one a week."""

from __future__ import annotations

import numpy as np
import pytest

from consumers.model_specs import policy_of
from monitor.config import ModelSettings
from monitor.drift import is_drifted
from monitor.evaluation import DriftPolicy, MethodChoice
from monitor.model_state import ModelMonitor, WindowSpec, feature_scores, threshold_for
from monitor.reference import build_profile
from monitor.repeated import alpha_for_runs, runs_per_evaluation


def runs(flags: np.ndarray) -> int:
    """Number of runs of True in a sequence of verdicts."""
    return int(np.sum(flags[1:] & ~flags[:-1]) + flags[0])


def test_runs_of_a_moving_sum_of_normal_panes():
    rng = np.random.default_rng(1)
    w, alpha = 60, 0.01
    panes = rng.normal(size=400_000)
    x = np.convolve(panes, np.ones(w), "valid") / np.sqrt(w)
    flags = x >= 2.3263478740408408  # P(X >= u) = 0.01
    assert flags.mean() == pytest.approx(alpha, rel=0.15)
    expected = runs_per_evaluation(alpha, w) * flags.size
    # a run lasts several evaluations: runs are far fewer than flagged evaluations
    assert expected < 0.4 * flags.sum()
    assert runs(flags) == pytest.approx(expected, rel=0.2)


def test_independent_windows_have_as_many_runs_as_flags():
    assert runs_per_evaluation(0.2, 1) == pytest.approx(0.2 * 0.8)
    assert alpha_for_runs(0.01, 1) == pytest.approx(0.0101, rel=1e-3)


def test_calibrated_thresholds_on_a_sliding_window_of_panes_give_the_runs_asked_for():
    """Real profiles, thresholds and scores; panes of values from the reference's law,
    windows of 12 panes sliding by one."""
    w, per_pane, target = 12, 100, 0.01
    alpha = alpha_for_runs(target, w)
    choice = MethodChoice("wasserstein", None, (), 0.0)
    found, evaluations, flagged = 0, 0, 0
    for seed in range(3):
        rng = np.random.default_rng(10 + seed)
        fp = build_profile("m", {"x": rng.normal(size=20_000)}).features[0]
        size = fp.counts.size
        values = rng.normal(size=(3000 + w - 1, per_pane))
        idx = fp.bins.assign(values.ravel()).reshape(values.shape)
        rows = np.repeat(np.arange(values.shape[0]), per_pane)
        counts = np.zeros((values.shape[0], size), dtype=np.int64)
        np.add.at(counts, (rows, idx.ravel()), 1)
        cum_c = np.cumsum(np.vstack([np.zeros(size, np.int64), counts]), axis=0)
        threshold, _ = threshold_for(fp, choice, w * per_pane, alpha)
        flags = []
        for t in range(w, values.shape[0] + 1):
            (score,) = feature_scores(fp, cum_c[t] - cum_c[t - w], ("wasserstein",))
            flags.append(is_drifted(score, threshold))
        f = np.array(flags)
        found, evaluations, flagged = found + runs(f), evaluations + f.size, flagged + f.sum()
    expected = target * evaluations
    assert flagged > 2 * found  # verdicts repeat: judging each evaluation alone is not enough
    assert expected / 1.6 < found < expected * 1.6


def test_the_default_policy_allows_one_false_alert_a_week():
    settings = ModelSettings.model_validate(
        {"name": "m", "reference": {"path": "r.csv"}, "features": {}}
    )
    policy = policy_of(settings)
    assert policy.false_alert_interval == 7 * 86400
    alpha = policy.feature_alpha(25, 60.0, 60)
    week = 7 * 86400 / 60
    assert runs_per_evaluation(alpha, 60) * 25 * week == pytest.approx(1.0, rel=1e-3)
    assert alpha < policy.false_alarm_rate / 25  # the interval is the stricter bound here
    # a short interval or none: the per-evaluation budget holds
    assert DriftPolicy(false_alert_interval=3600.0).feature_alpha(25, 60.0, 60) == 0.01 / 25
    assert DriftPolicy(false_alert_interval=None).feature_alpha(25, 60.0, 60) == 0.01 / 25
    lax = DriftPolicy(false_alarm_rate=0.9, false_alert_interval=180.0)
    assert lax.feature_alpha(1, 60.0, 1) == 0.9  # a run every 3 panes: no bound


def test_the_monitor_judges_features_at_the_policys_rate_for_its_windows():
    rng = np.random.default_rng(3)
    profile = build_profile("m", {"x": rng.normal(size=2000), "y": rng.normal(size=2000)})
    mon = ModelMonitor(profile, WindowSpec(60.0, 3600.0, 300.0))
    assert mon.feature_alpha == DriftPolicy().feature_alpha(2, 60.0, 60)
    shorter = ModelMonitor(profile, WindowSpec(60.0, 600.0, 300.0))
    # fewer panes per window: verdicts repeat less, so each is judged more strictly
    assert shorter.feature_alpha < mon.feature_alpha
