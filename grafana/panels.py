"""Building blocks of driftline's dashboards on Grafana's ``grafana-foundation-sdk``.

Every panel queries the Prometheus datasource through the ``datasource`` variable, whose
default is the datasource provisioned by grafana/provisioning (uid ``DATASOURCE_UID``).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DatasourceVariable,
    ThresholdsConfig,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery as PrometheusQuery
from grafana_foundation_sdk.builders.stat import Panel as Stat
from grafana_foundation_sdk.builders.timeseries import Panel as Timeseries
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.common import (
    BigValueColorMode,
    BigValueGraphMode,
    GraphThresholdsStyleMode,
    LegendDisplayMode,
    LegendPlacement,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

__all__ = [
    "CATCH_UP_SECONDS",
    "DATASET_DRIFT_SHARE",
    "DATASOURCE_UID",
    "DRIFT_THRESHOLD",
    "INVALID_SHARE",
    "OK",
    "PROMETHEUS",
    "RATE",
    "dashboard",
    "query",
    "stat",
    "states",
    "thresholds",
    "timeseries",
]

#: The uid of the Prometheus datasource in grafana/provisioning/datasources/prometheus.yaml.
DATASOURCE_UID = "driftline-prometheus"
#: driftline's default drift threshold (wasserstein and jensenshannon), drawn on drift panels.
DRIFT_THRESHOLD = 0.1
#: Thresholds shared with deploy/prometheus/alert_rules.yml (a unit test checks them).
DATASET_DRIFT_SHARE = 0.5
INVALID_SHARE = 0.05
CATCH_UP_SECONDS = 300

PROMETHEUS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
#: Grafana's rate window: at least four scrape intervals, whatever the panel's resolution.
RATE = "$__rate_interval"
#: The base step of a threshold scale.
OK: tuple[str, float | None] = ("green", None)


def query(expr: str, legend: str = "", ref: str = "A", *, table: bool = False) -> PrometheusQuery:
    """A PromQL target; ``table`` makes it an instant query shown as a table."""
    q = PrometheusQuery().expr(expr).ref_id(ref).datasource(PROMETHEUS)
    if legend:
        q = q.legend_format(legend)
    if table:
        q = q.instant().format(PromQueryFormat.TABLE)
    return q


def thresholds(*steps: tuple[str, float | None]) -> ThresholdsConfig:
    return (
        ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(color=color, value=value) for color, value in steps])
    )


def states(zero: tuple[str, str], one: tuple[str, str]) -> list[dm.ValueMapping]:
    """A 0/1 gauge shown as words: ``(text, color)`` for each value."""
    return [
        dm.ValueMap(
            options={
                "0": dm.ValueMappingResult(text=zero[0], color=zero[1], index=0),
                "1": dm.ValueMappingResult(text=one[0], color=one[1], index=1),
            }
        )
    ]


def timeseries(
    title: str,
    description: str,
    unit: str,
    *queries: PrometheusQuery,
    steps: ThresholdsConfig | None = None,
    minimum: float | None = 0,
    maximum: float | None = None,
    span: int = 12,
) -> Timeseries:
    """A time series panel; ``steps`` are drawn as dashed lines."""
    panel = (
        Timeseries()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(PROMETHEUS)
        .span(span)
        .height(8)
        .legend(
            cb.VizLegendOptions()
            .display_mode(LegendDisplayMode.TABLE)
            .placement(LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["lastNotNull", "max"])
        )
    )
    for q in queries:
        panel = panel.with_target(q)
    if minimum is not None:
        panel = panel.min(minimum)
    if maximum is not None:
        panel = panel.max(maximum)
    if steps is not None:
        panel = panel.thresholds(steps).thresholds_style(
            cb.GraphThresholdsStyleConfig().mode(GraphThresholdsStyleMode.DASHED)
        )
    return panel


def stat(
    title: str,
    description: str,
    unit: str,
    target: PrometheusQuery,
    *,
    steps: ThresholdsConfig | None = None,
    mappings: list[dm.ValueMapping] | None = None,
    span: int = 6,
) -> Stat:
    """A single value per series, coloured by ``steps`` or ``mappings``."""
    panel = (
        Stat()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(PROMETHEUS)
        .span(span)
        .height(5)
        .with_target(target)
        .graph_mode(BigValueGraphMode.NONE)
        .color_mode(BigValueColorMode.BACKGROUND)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    if steps is not None:
        panel = panel.thresholds(steps)
    if mappings:
        panel = panel.mappings(mappings)
    return panel


def dashboard(uid: str, title: str, description: str) -> Dashboard:
    """A driftline dashboard with the ``datasource`` variable and common settings."""
    return (
        Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(["driftline"])
        .editable()
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .with_variable(
            DatasourceVariable("datasource")
            .label("Data source")
            .type("prometheus")
            .current(dm.VariableOption(text="Prometheus", value=DATASOURCE_UID))
        )
    )
