"""The Model detail dashboard: one model's drift per feature, data quality, labels, latency."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard, QueryVariable, Row
from grafana_foundation_sdk.builders.table import Panel as Table
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.common import TableCellDisplayMode
from panels import (
    DRIFT_THRESHOLD,
    OK,
    PROMETHEUS,
    RATE,
    dashboard,
    query,
    states,
    thresholds,
    timeseries,
)

__all__ = ["model_detail"]

#: query B of a panel drawn dashed: the reference, or the model as served, to compare with
DASHED = dm.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]})


def model_detail() -> Dashboard:
    """One model, chosen with the ``model`` variable."""
    sel = 'model="$model"'
    # the model's evaluation series: the whole model ("All") or one segment
    # (a version's own window has a ``model_version`` label: its series are in the
    # Versions row)
    esel = 'model="$model",segment=~"$segment",model_version=""'
    vsel = 'model="$model",segment="",model_version!=""'
    deciding = (
        f"driftline_feature_drift_score{{{esel}}} "
        f"and on (model, feature, method) driftline_feature_drift_threshold{{{esel}}}"
    )
    return (
        dashboard(
            "driftline-model",
            "driftline / Model detail",
            "One model: drift per feature, data quality, prediction drift, labels, latency.",
        )
        .with_variable(
            QueryVariable("model")
            .label("Model")
            .datasource(PROMETHEUS)
            .query("label_values(driftline_events_total, model)")
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
        )
        .with_variable(
            QueryVariable("segment")
            .label("Segment (All: the whole model)")
            .description("A segment of the model (field=value), or All for the whole model.")
            .datasource(PROMETHEUS)
            .query('label_values(driftline_segment_traffic_ratio{model="$model"}, segment)')
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
            .include_all(True)
            # series without a segment label are the whole model's
            .all_value("^$")
        )
        .with_row(Row("Drift"))
        .with_panel(
            timeseries(
                "Feature drift score",
                "Score of the method that decides each feature's drift, with its configured "
                f"threshold (dashed series). The dashed line marks the default {DRIFT_THRESHOLD}.",
                "none",
                query(f"sum by (feature, method) ({deciding})", "{{feature}} ({{method}})"),
                query(
                    f"sum by (feature, method) (driftline_feature_drift_threshold{{{esel}}})",
                    "threshold {{feature}} ({{method}})",
                    "B",
                ),
                steps=thresholds(OK, ("red", DRIFT_THRESHOLD)),
            ).override_by_query(
                "B", [DASHED, dm.DynamicConfigValue(id_val="custom.fillOpacity", value=0)]
            )
        )
        .with_panel(
            _features_table(
                "Features now",
                "Current verdict, deciding score and threshold, and data quality per feature.",
                esel,
                deciding,
            )
        )
        .with_panel(
            timeseries(
                "All drift statistics",
                "Every statistic computed per feature (the deciding one and the second "
                "opinions of drift.*.report); scales differ by method.",
                "none",
                query(
                    f"sum by (feature, method) (driftline_feature_drift_score{{{esel}}})",
                    "{{feature}} {{method}}",
                ),
            )
        )
        .with_panel(
            timeseries(
                "Drift test p-values",
                "p-values of the test methods (ks, chisquare); below 0.05 is significant.",
                "none",
                query(
                    f"sum by (feature, method) (driftline_feature_drift_pvalue{{{esel}}})",
                    "{{feature}} {{method}}",
                ),
                steps=thresholds(("red", None), ("green", 0.05)),
                maximum=1,
            )
        )
        .with_panel(
            timeseries(
                "Prediction drift",
                "Drift of the model's output against the reference predictions.",
                "none",
                query(
                    f"sum by (method) (driftline_prediction_drift_score{{{esel}}})", "{{method}}"
                ),
                steps=thresholds(OK, ("red", DRIFT_THRESHOLD)),
            )
        )
        .with_row(Row("Data quality"))
        .with_panel(
            timeseries(
                "Missing values",
                "Share of the window's events without the feature (absent or null).",
                "percentunit",
                query(
                    f"sum by (feature) (driftline_feature_missing_ratio{{{esel}}})", "{{feature}}"
                ),
                maximum=1,
            )
        )
        .with_panel(
            timeseries(
                "Out of range",
                "Share of the window's values outside the configured bounds or the "
                "reference range.",
                "percentunit",
                query(
                    f"sum by (feature) (driftline_feature_out_of_range_ratio{{{esel}}})",
                    "{{feature}}",
                ),
                maximum=1,
            )
        )
        .with_panel(
            timeseries(
                "New categories",
                "Share of the window's values of categorical features unseen in the reference.",
                "percentunit",
                query(
                    f"sum by (feature) (driftline_feature_new_category_ratio{{{esel}}})",
                    "{{feature}}",
                ),
                maximum=1,
            )
        )
        .with_panel(
            timeseries(
                "Wrong types and non-finite values",
                "Share of the window's values of the wrong type, and of NaN or infinity.",
                "percentunit",
                query(
                    f"sum by (feature) (driftline_feature_type_mismatch_ratio{{{esel}}})",
                    "{{feature}} wrong type",
                ),
                query(
                    f"sum by (feature) (driftline_feature_nonfinite_ratio{{{esel}}})",
                    "{{feature}} non-finite",
                    "B",
                ),
                maximum=1,
            )
        )
        .with_panel(
            timeseries(
                "Unexpected features",
                "Events per second carrying a feature the model's schema lacks (schema drift).",
                "eps",
                query(
                    "sum by (feature) "
                    f"(rate(driftline_unexpected_feature_events_total{{{sel}}}[{RATE}]))",
                    "{{feature}}",
                ),
            )
        )
        .with_row(Row("Traffic, labels and latency"))
        .with_panel(
            timeseries(
                "Events",
                "Valid events per second, and dead-lettered ones.",
                "eps",
                query(
                    f"sum by (kind) (rate(driftline_events_total{{{sel}}}[{RATE}]))",
                    "{{kind}}",
                ),
                query(
                    f"sum(rate(driftline_events_invalid_total{{{sel}}}[{RATE}]))",
                    "invalid",
                    "B",
                ),
            )
        )
        .with_panel(
            timeseries(
                "Prediction latency",
                "Latency reported by the serving app (latency_ms), quantiles.",
                "s",
                *(
                    query(
                        f"histogram_quantile({q}, sum by (le) "
                        f"(rate(driftline_prediction_latency_seconds_bucket{{{sel}}}[{RATE}])))",
                        f"p{round(q * 100)}",
                        ref,
                    )
                    for q, ref in ((0.5, "A"), (0.9, "B"), (0.99, "C"))
                ),
            )
        )
        .with_panel(
            timeseries(
                "Label delay",
                "Time from a prediction to its ground-truth label, quantiles.",
                "s",
                *(
                    query(
                        f"histogram_quantile({q}, sum by (le) "
                        f"(rate(driftline_label_delay_seconds_bucket{{{sel}}}[{RATE}])))",
                        f"p{round(q * 100)}",
                        ref,
                    )
                    for q, ref in ((0.5, "A"), (0.9, "B"))
                ),
            )
        )
        .with_panel(
            timeseries(
                "Label coverage",
                "Share of the window's predictions that have a ground-truth label.",
                "percentunit",
                query(f"sum(driftline_label_coverage_ratio{{{esel}}})", "coverage"),
                maximum=1,
            )
        )
        .with_row(Row("Performance"))
        .with_panel(
            timeseries(
                "Realized vs estimated performance",
                "Each metric from ground-truth labels (realized) and estimated without them.",
                "none",
                query(
                    f"sum by (metric) (driftline_model_performance{{{esel}}})",
                    "{{metric}} realized",
                ),
                query(
                    f"sum by (metric) (driftline_model_performance_estimated{{{esel}}})",
                    "{{metric}} estimated",
                    "B",
                ),
                minimum=None,
                span=24,
            )
        )
        .with_panel(
            timeseries(
                "Business KPIs",
                "The model's KPIs (kpis: in its configuration) on the live window.",
                "none",
                query(f"sum by (kpi) (driftline_kpi{{{esel}}})", "{{kpi}}"),
                minimum=None,
                span=24,
            )
        )
        .with_row(Row("Versions"))
        .with_panel(
            timeseries(
                "Performance by version",
                "Realized performance of each live version's own window, beside the model as"
                " served (dashed): a shadow challenger answers the same requests and is joined"
                " to the same ground truth. Shown while two versions or more are live.",
                "none",
                query(
                    f"sum by (model_version, metric) (driftline_model_performance{{{vsel}}})",
                    "{{model_version}} {{metric}}",
                ),
                query(
                    "sum by (metric) (driftline_model_performance"
                    '{model="$model",segment="",model_version=""})',
                    "served {{metric}}",
                    "B",
                ),
            ).override_by_query("B", [DASHED])
        )
        .with_panel(
            timeseries(
                "Drift by version",
                "Share of the features that drifted in each version's window (each judged"
                " against its own reference) and each version's prediction drift.",
                "none",
                query(
                    f"sum by (model_version) (driftline_drifted_features_ratio{{{vsel}}})",
                    "{{model_version}} drifted features",
                ),
                query(
                    f"sum by (model_version, method) (driftline_prediction_drift_score{{{vsel}}})",
                    "{{model_version}} prediction {{method}}",
                    "B",
                ),
            )
        )
        .with_panel(
            timeseries(
                "Estimated performance by version",
                "Confidence-based estimates of each version's performance, before labels come.",
                "none",
                query(
                    "sum by (model_version, metric) "
                    f"(driftline_model_performance_estimated{{{vsel}}})",
                    "{{model_version}} {{metric}}",
                ),
            )
        )
        .with_panel(
            timeseries(
                "Events by version",
                "Events in each version's live window and label coverage.",
                "none",
                query(
                    f"sum by (model_version) (driftline_window_events{{{vsel}}})",
                    "{{model_version}} events",
                ),
                query(
                    f"sum by (model_version) (driftline_label_coverage_ratio{{{vsel}}})",
                    "{{model_version}} label coverage",
                    "B",
                ),
            )
        )
        .with_row(Row("Segments"))
        .with_panel(
            timeseries(
                "Segment traffic vs reference",
                "Each segment's share of the live window's events (solid) and of the reference"
                " rows (dashed): a shift of traffic between segments is drift of its own.",
                "percentunit",
                query(
                    f"sum by (segment) (driftline_segment_traffic_ratio{{{sel}}})",
                    "{{segment}}",
                ),
                query(
                    f"sum by (segment) (driftline_segment_reference_ratio{{{sel}}})",
                    "reference {{segment}}",
                    "B",
                ),
                maximum=1,
            ).override_by_query("B", [DASHED])
        )
        .with_panel(
            timeseries(
                "Drifted features per segment",
                "Share of the features that drifted in each segment's window, and the"
                " Jensen-Shannon distance of each segment field's traffic mix from the reference.",
                "percentunit",
                query(
                    f'sum by (segment) (driftline_drifted_features_ratio{{{sel},segment!=""}})',
                    "{{segment}}",
                ),
                query(
                    f"sum by (segment_field) (driftline_segment_mix_drift_score{{{sel}}})",
                    "mix {{segment_field}}",
                    "B",
                ),
                maximum=1,
            )
        )
    )


def _features_table(title: str, description: str, sel: str, deciding: str) -> Table:
    columns = [
        # (ref, query, column name, unit)
        ("A", f"sum by (feature) (driftline_feature_drifted{{{sel}}})", "drifted", "none"),
        ("B", f"sum by (feature, method) ({deciding})", "score", "none"),
        (
            "C",
            f"sum by (feature) (driftline_feature_drift_threshold{{{sel}}})",
            "threshold",
            "none",
        ),
        (
            "D",
            f"sum by (feature) (driftline_feature_missing_ratio{{{sel}}})",
            "missing",
            "percentunit",
        ),
        (
            "E",
            f"sum by (feature) (driftline_feature_out_of_range_ratio{{{sel}}})",
            "out of range",
            "percentunit",
        ),
    ]
    panel = (
        Table()
        .title(title)
        .description(description)
        .unit("none")
        .datasource(PROMETHEUS)
        .span(12)
        .height(8)
        .with_transformation(dm.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            dm.DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": {"Time": True},
                    "indexByName": {"feature": 0, "method": 1},
                    "renameByName": {f"Value #{ref}": name for ref, _, name, _ in columns},
                },
            )
        )
    )
    for ref, expr, name, unit in columns:
        panel = panel.with_target(query(expr, ref=ref, table=True))
        if unit != "none":
            panel = panel.override_by_name(name, [dm.DynamicConfigValue(id_val="unit", value=unit)])
    return panel.override_by_name(
        "drifted",
        [
            dm.DynamicConfigValue(
                id_val="mappings",
                value=[m.to_json() for m in states(("no", "green"), ("yes", "red"))],
            ),
            dm.DynamicConfigValue(
                id_val="custom.cellOptions", value={"type": TableCellDisplayMode.COLOR_BACKGROUND}
            ),
        ],
    )
