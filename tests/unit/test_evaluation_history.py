"""The evaluation history: bounded in points and in bytes, one point per window position,
kept by the stage-2 owner of a model."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from consumers import web_view
from consumers.replay_report import MAX_REPORT_POINTS, downsampled
from monitor.evaluation_history import EvaluationHistory, evaluation_point
from tests.unit.test_model_state import CATS, batch, monitor_for


def _point(end: float, pad: int = 0) -> dict[str, object]:
    return {"window_start": end - 60.0, "window_end": end, "features": {"x": "y" * pad}}


def test_the_oldest_points_go_when_the_count_is_reached():
    h = EvaluationHistory(max_points=5, max_bytes=1 << 20)
    for k in range(12):
        h.add(_point(60.0 * k))
    assert [p["window_end"] for p in h.points()] == [60.0 * k for k in range(7, 12)]


@pytest.mark.parametrize("pad", [0, 100, 5000])
def test_the_bytes_kept_stay_under_the_bound(pad):
    h = EvaluationHistory(max_points=10_000, max_bytes=20_000)
    for k in range(500):
        h.add(_point(60.0 * k, pad))
        sizes = [len(json.dumps(p)) for p in h.points()]
        assert h.bytes == sum(sizes)
        # at most the bound, except a single point larger than the bound on its own
        assert h.bytes <= 20_000 or len(h) == 1
    assert h.points()[-1]["window_end"] == 60.0 * 499


def test_a_window_evaluated_again_replaces_its_point():
    h = EvaluationHistory()
    h.add(_point(60.0))
    h.add({**_point(60.0), "events": 2})
    h.add(_point(120.0))
    assert [(p["window_end"], p.get("events")) for p in h.points()] == [(60.0, 2), (120.0, None)]
    assert h.bytes == sum(len(json.dumps(p)) for p in h.points())


def test_a_point_holds_what_the_charts_read():
    rng = np.random.default_rng(1)
    m = monitor_for(rng.normal(0, 1, 2000), rng.choice(CATS, 2000))
    m.ingest(batch(rng.uniform(0, 100, 500), rng.normal(1, 1, 500), rng.choice(CATS, 500)))
    m.advance(100.0)
    ev = m.evaluate(now=5.0)
    point = evaluation_point(ev)
    for f in ev.features:
        assert point["features"][f.name] == [f.decision.score, f.threshold, f.drifted]
    assert (point["window_end"], point["events"]) == (ev.window_end, 500)
    assert point["drifted_features_ratio"] == ev.drifted_features_ratio


def test_the_package_data_ships_every_asset_of_the_page():
    pyproject = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    setuptools = pyproject["tool"]["setuptools"]
    assert "consumers.web" in setuptools["packages"]
    assert setuptools["package-data"]["consumers.web"] == ["*"]
    for name in [*web_view.ASSETS, "index.html"]:
        assert web_view.asset(name)


def test_a_value_cannot_end_the_reports_embedded_data_early():
    # a category from a reference file reaches the report as text: "<!--<script" there
    # would make the parser skip the real end tag and swallow the rest of the page
    data = {"mode": "report", "models": [{"name": "<!--<script>", "why": "</script><b>"}]}
    html = web_view.report(data)
    opening = '<script id="driftline-data" type="application/json">'
    start = html.index(opening) + len(opening)
    end = html.index("</script>", start)
    embedded = html[start:end]
    assert "<" not in embedded
    assert json.loads(embedded) == data
    assert html.rstrip().endswith("</html>")


def test_a_long_replay_is_charted_in_buckets_that_keep_every_drift():
    # a week of 1-minute panes: 10 080 windows, one drifted window in the middle
    points = []
    for i in range(10_080):
        drifted = i == 5_000
        score = 0.9 if drifted else 0.1 + 0.01 * (i % 7)
        points.append(
            {
                "window_start": 60.0 * i,
                "window_end": 60.0 * i + 3600.0,
                "evaluated_at": 60.0 * i + 3600.0,
                "events": 100 + i,
                "drifted_features_ratio": 1.0 if drifted else 0.0,
                "features": {"x": [score, 0.5, drifted], "c": [None, 0.2, None]},
                "performance": {"accuracy": i / 10_080},
                "estimated": {},
                "label_coverage": 0.5,
            }
        )
    out = downsampled(points)
    assert len(out) <= MAX_REPORT_POINTS < len(points)
    assert sum(p["windows"] for p in out) == len(points)
    assert out[0]["window_start"] == 0.0
    assert out[-1]["window_end"] == points[-1]["window_end"]
    flagged = [p for p in out if p["features"]["x"][2]]
    assert len(flagged) == 1
    assert flagged[0]["features"]["x"][:2] == [0.9, 0.5]
    assert flagged[0]["drifted_features_ratio"] == 1.0
    assert all(p["features"]["c"] == [None, 0.2, None] for p in out)
    assert out[-1]["performance"] == points[-1]["performance"]
    assert downsampled(points[:100]) == points[:100]  # short replays are left as they are
