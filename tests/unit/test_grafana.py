"""The Grafana dashboards: reproducible JSON, units on every panel, only known metrics."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
COMMITTED = sorted((GRAFANA / "dashboards").glob("*.json"))

# The README's metrics table (histograms also have _bucket, _sum and _count series).
DESIGN_METRICS = {
    "driftline_events_total",
    "driftline_events_invalid_total",
    "driftline_events_late_total",
    "driftline_window_events",
    "driftline_feature_drift_score",
    "driftline_feature_drift_pvalue",
    "driftline_feature_drift_threshold",
    "driftline_feature_drifted",
    "driftline_drifted_features_ratio",
    "driftline_feature_missing_ratio",
    "driftline_feature_out_of_range_ratio",
    "driftline_feature_new_category_ratio",
    "driftline_prediction_drift_score",
    "driftline_model_performance",
    "driftline_model_performance_estimated",
    "driftline_label_coverage_ratio",
    "driftline_label_delay_seconds",
    "driftline_prediction_latency_seconds",
    "driftline_last_evaluation_timestamp_seconds",
    "driftline_alerts_firing",
    "driftline_webhook_deliveries_total",
    "driftline_retraining_requests_total",
    "driftline_build_info",
    "driftline_kpi",
}
HISTOGRAMS = {"driftline_label_delay_seconds", "driftline_prediction_latency_seconds"}
# The service's own health and quality metrics beyond the table (README, "Metrics").
SERVICE_METRICS = {
    "driftline_kafka_connected",
    "driftline_consumer_lag",
    "driftline_checkpoint_timestamp_seconds",
    "driftline_checkpoint_duration_seconds",
    "driftline_checkpoint_size_bytes",
    "driftline_feature_type_mismatch_ratio",
    "driftline_feature_nonfinite_ratio",
    "driftline_unexpected_feature_events_total",
    "driftline_segment_traffic_ratio",
    "driftline_segment_reference_ratio",
    "driftline_segment_mix_drift_score",
}
# Series Prometheus makes itself.
PROMETHEUS_METRICS = {"up", "ALERTS"}
KNOWN = (
    DESIGN_METRICS
    | SERVICE_METRICS
    | PROMETHEUS_METRICS
    | {f"{h}_{suffix}" for h in HISTOGRAMS for suffix in ("bucket", "sum", "count")}
)

_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring",
    "group_left", "group_right", "bool", "offset",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords,
    label names or strings.

    >>> sorted(metric_names('sum by (model) (rate(a_total{k="v"}[5m])) / on (x) b'))
    ['a_total', 'b']
    """
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        rest = expr[match.end() :].lstrip()
        if match.group() not in _KEYWORDS and not rest.startswith("("):
            names.add(match.group())
    return names


@pytest.fixture(scope="module")
def dashboards() -> Iterator[ModuleType]:
    """grafana/dashboards.py, imported as the script imports its sibling modules."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(GRAFANA))
        yield importlib.import_module("dashboards")


def _committed() -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in COMMITTED]


def _panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in board["panels"] if p["type"] != "row"]


def test_regenerating_leaves_the_committed_json_unchanged(tmp_path):
    # as `make generate` runs it, in a fresh process
    subprocess.run(
        [sys.executable, str(GRAFANA / "dashboards.py"), "--output", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    generated = sorted(tmp_path.glob("*.json"))
    assert [p.name for p in generated] == [p.name for p in COMMITTED]
    for new, old in zip(generated, COMMITTED, strict=True):
        assert new.read_bytes() == old.read_bytes(), f"{old.name}: run `make generate`"


def test_rendering_is_deterministic(dashboards):
    first = [dashboards.render(b) for b in dashboards.build_dashboards().values()]
    second = [dashboards.render(b) for b in dashboards.build_dashboards().values()]
    assert first == second


def test_three_dashboards_with_stable_uids():
    boards = {b["uid"]: b for b in _committed()}
    assert set(boards) == {"driftline-overview", "driftline-model", "driftline-service"}
    for board in boards.values():
        assert "driftline" in board["tags"]
        # Grafana's own fields, not ours
        assert "version" not in board
        assert "id" not in board
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), board["uid"]


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.stem)
def test_every_panel_has_a_unit_and_the_datasource_variable(path):
    board = json.loads(path.read_text())
    for panel in _panels(board):
        assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            assert target["refId"], panel["title"]


def test_the_datasource_variable_defaults_to_the_provisioned_uid(dashboards):
    provisioned = yaml.safe_load(
        (GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )
    (datasource,) = provisioned["datasources"]
    assert datasource["uid"] == dashboards.DATASOURCE_UID
    for board in _committed():
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["current"]["value"] == datasource["uid"]
        assert variables["datasource"]["query"] == datasource["type"]


def test_model_detail_has_a_model_variable():
    (board,) = [b for b in _committed() if b["uid"] == "driftline-model"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["model"]["query"] == "label_values(driftline_events_total, model)"
    for panel in _panels(board):
        for target in panel["targets"]:
            assert 'model="$model"' in target["expr"], panel["title"]


def test_every_query_uses_known_metrics_only():
    unknown = {}
    for board in _committed():
        for panel in _panels(board):
            for target in panel["targets"]:
                names = metric_names(target["expr"]) - KNOWN
                if names:
                    unknown[(board["title"], panel["title"])] = sorted(names)
    assert unknown == {}


def test_metric_names_parser_finds_every_metric():
    found = set()
    for board in _committed():
        for panel in _panels(board):
            for target in panel["targets"]:
                found |= metric_names(target["expr"])
    # not vacuous: most of the catalogue is on some panel
    assert len(found & KNOWN) >= 25
    assert "driftline_feature_drifted" in found


def test_rates_use_the_rate_interval():
    for board in _committed():
        for panel in _panels(board):
            for target in panel["targets"]:
                for window in re.findall(r"\[([^\]]*)\]", target["expr"]):
                    assert window == "$__rate_interval", (panel["title"], target["expr"])


def test_drift_panels_draw_the_default_threshold(dashboards):
    (board,) = [b for b in _committed() if b["uid"] == "driftline-model"]
    panels = {p["title"]: p for p in _panels(board)}
    for title in ("Feature drift score", "Prediction drift"):
        steps = panels[title]["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert {"color": "red", "value": dashboards.DRIFT_THRESHOLD} in steps
    assert dashboards.DRIFT_THRESHOLD == 0.1  # the documented default for both kinds


def test_alert_thresholds_on_panels_match_the_alert_rules(dashboards):
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alert_rules.yml").read_text())
    exprs = {r["alert"]: r["expr"] for g in rules["groups"] for r in g["rules"]}
    assert exprs["DriftlineDatasetDrift"].endswith(f">= {dashboards.DATASET_DRIFT_SHARE}")
    assert exprs["DriftlineInvalidEvents"].endswith(f"> {dashboards.INVALID_SHARE}")
    assert exprs["DriftlineConsumerLagging"].endswith(f"> {dashboards.CATCH_UP_SECONDS}")


def test_panel_queries_substitute_every_variable(dashboards):
    queries = dashboards.panel_queries(model="churn", rate_interval="2m")
    assert len(queries) == sum(len(p["targets"]) for b in _committed() for p in _panels(b))
    for board, panel, expr in queries:
        assert "$" not in expr, (board, panel, expr)
    assert any('model="churn"' in expr for _, _, expr in queries)
    assert any("[2m]" in expr for _, _, expr in queries)
