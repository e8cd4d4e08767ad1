"""The Overview dashboard: every monitored model's traffic, drift, performance and alerts."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard, Row
from panels import (
    DATASET_DRIFT_SHARE,
    INVALID_SHARE,
    OK,
    RATE,
    dashboard,
    query,
    stat,
    thresholds,
    timeseries,
)

#: the model as served: not a segment's series, nor a version's
WHOLE = 'segment="",model_version=""'

__all__ = ["overview"]


def overview() -> Dashboard:
    """Every model at a glance."""
    m = "{{model}}"
    return (
        dashboard(
            "driftline-overview",
            "driftline / Overview",
            "Every monitored model: traffic, drift, performance and alerts.",
        )
        .with_row(Row("Traffic"))
        .with_panel(
            timeseries(
                "Events consumed",
                "Valid prediction and ground-truth events per second.",
                "eps",
                query(
                    f"sum by (model, kind) (rate(driftline_events_total[{RATE}]))",
                    f"{m} {{{{kind}}}}",
                ),
            )
        )
        .with_panel(
            timeseries(
                "Invalid events",
                "Records sent to the dead-letter topic per second, by reason.",
                "eps",
                query(
                    f"sum by (model, reason) (rate(driftline_events_invalid_total[{RATE}]))",
                    f"{m} {{{{reason}}}}",
                ),
            )
        )
        .with_panel(
            timeseries(
                "Invalid share",
                "Dead-lettered records over all records consumed; the dashed line is the "
                "DriftlineInvalidEvents alert threshold.",
                "percentunit",
                query(
                    f"sum by (model) (rate(driftline_events_invalid_total[{RATE}])) "
                    # valid + dead-lettered: different label sets, so `or` is their union
                    "/ sum by (model) ("
                    f'rate(driftline_events_total{{kind="prediction"}}[{RATE}]) '
                    f"or rate(driftline_events_invalid_total[{RATE}]))",
                    m,
                ),
                steps=thresholds(OK, ("red", INVALID_SHARE)),
            )
        )
        .with_panel(
            timeseries(
                "Late events",
                "Events whose pane had closed (allowed lateness passed): counted, not windowed.",
                "eps",
                query(f"sum by (model) (rate(driftline_events_late_total[{RATE}]))", m),
            )
        )
        .with_row(Row("Drift"))
        .with_panel(
            timeseries(
                "Drifted features ratio",
                "Share of each model's features that drifted in the live window; the dashed "
                "line is the DriftlineDatasetDrift alert threshold.",
                "percentunit",
                query(
                    f"sum by (model) (driftline_drifted_features_ratio{{{WHOLE}}})",
                    m,
                ),
                steps=thresholds(OK, ("red", DATASET_DRIFT_SHARE)),
                maximum=1,
            )
        )
        .with_panel(
            stat(
                "Drifted features",
                "Features drifted now, per model.",
                "short",
                query(f"sum by (model) (driftline_feature_drifted{{{WHOLE}}})", m),
                steps=thresholds(OK, ("red", 1)),
            )
        )
        .with_panel(
            stat(
                "Last evaluation",
                "Time since each model's window was last evaluated.",
                "s",
                query(
                    "time() - sum by (model) "
                    f"(driftline_last_evaluation_timestamp_seconds{{{WHOLE}}})",
                    m,
                ),
                steps=thresholds(OK, ("orange", 300), ("red", 900)),
            )
        )
        .with_panel(
            timeseries(
                "Window events",
                "Events in each model's live window; fewer than drift.min_events gives no verdict.",
                "short",
                query(f"sum by (model) (driftline_window_events{{{WHOLE}}})", m),
            )
        )
        .with_row(Row("Performance"))
        .with_panel(
            timeseries(
                "Realized vs estimated performance",
                "Performance from ground-truth labels (realized) and estimated without them.",
                "none",
                query(
                    f"sum by (model, metric) (driftline_model_performance{{{WHOLE}}})",
                    f"{m} {{{{metric}}}} realized",
                ),
                query(
                    f"sum by (model, metric) (driftline_model_performance_estimated{{{WHOLE}}})",
                    f"{m} {{{{metric}}}} estimated",
                    "B",
                ),
                minimum=None,
            )
        )
        .with_panel(
            timeseries(
                "Label coverage",
                "Share of the window's predictions that have a ground-truth label.",
                "percentunit",
                query(
                    f"sum by (model) (driftline_label_coverage_ratio{{{WHOLE}}})",
                    m,
                ),
                maximum=1,
            )
        )
        .with_row(Row("Alerts"))
        .with_panel(
            timeseries(
                "Firing alerts (driftline rules)",
                "Alerts of the service's own rules (the alerts: section of its configuration).",
                "short",
                query(
                    "sum by (model, alertname, severity) (driftline_alerts_firing)",
                    f"{m} {{{{alertname}}}}",
                ),
            )
        )
        .with_panel(
            timeseries(
                "Firing alerts (Prometheus rules)",
                "Alerts of deploy/prometheus/alert_rules.yml firing in Prometheus.",
                "short",
                query(
                    'sum by (alertname, model, severity) (ALERTS{alertstate="firing", '
                    'alertname=~"Driftline.*"})',
                    f"{{{{alertname}}}} {m}",
                ),
            )
        )
    )
