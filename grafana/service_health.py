"""The Service health dashboard: scrape, Kafka consumer, checkpoints, webhooks."""

from __future__ import annotations

from grafana_foundation_sdk.builders.dashboard import Dashboard, Row
from grafana_foundation_sdk.builders.table import Panel as Table
from grafana_foundation_sdk.models import dashboard as dm
from panels import (
    CATCH_UP_SECONDS,
    OK,
    PROMETHEUS,
    RATE,
    dashboard,
    query,
    stat,
    states,
    thresholds,
    timeseries,
)

__all__ = ["service_health"]


def service_health() -> Dashboard:
    """The process, its consumer, checkpoints and webhooks."""
    processed = (
        f"rate(driftline_events_total[{RATE}]) or rate(driftline_events_invalid_total[{RATE}])"
    )
    return (
        dashboard(
            "driftline-service",
            "driftline / Service health",
            "The driftline process: scrape, Kafka consumer, checkpoints, webhooks.",
        )
        .with_row(Row("Process"))
        .with_panel(
            stat(
                "Scrape target",
                "Prometheus's up metric for the job driftline.",
                "none",
                query('min(up{job="driftline"})', "up"),
                mappings=states(("down", "red"), ("up", "green")),
            )
        )
        .with_panel(
            stat(
                "Kafka",
                "1 when every instance's consumer has partitions and a live broker session.",
                "none",
                query("min(driftline_kafka_connected)", "connected"),
                mappings=states(("disconnected", "red"), ("connected", "green")),
            )
        )
        .with_panel(
            stat(
                "Instances",
                "Running driftline instances.",
                "short",
                query("count(driftline_build_info)", "instances"),
            )
        )
        .with_panel(
            Table()
            .title("Versions")
            .description("Instances per driftline version.")
            .unit("short")
            .datasource(PROMETHEUS)
            .span(6)
            .height(5)
            .with_target(query("count by (version) (driftline_build_info)", table=True))
            .with_transformation(
                dm.DataTransformerConfig(
                    id_val="organize",
                    options={
                        "excludeByName": {"Time": True},
                        "renameByName": {"Value": "instances"},
                    },
                )
            )
        )
        .with_row(Row("Consumer"))
        .with_panel(
            timeseries(
                "Records processed",
                "Records consumed per second (valid and dead-lettered), per instance.",
                "recps",
                query(f"sum by (instance) ({processed})", "{{instance}}"),
            )
        )
        .with_panel(
            timeseries(
                "Consumer lag",
                "Records between the consumer's position and the end of each partition.",
                "short",
                query(
                    "sum by (topic, partition) (driftline_consumer_lag)",
                    "{{topic}} [{{partition}}]",
                ),
            )
        )
        .with_panel(
            timeseries(
                "Time to catch up",
                "Lag divided by the processing rate; the dashed line is the "
                "DriftlineConsumerLagging alert threshold.",
                "s",
                query(
                    f"sum by (instance) (driftline_consumer_lag) / sum by (instance) ({processed})",
                    "{{instance}}",
                ),
                steps=thresholds(OK, ("red", CATCH_UP_SECONDS)),
            )
        )
        .with_row(Row("Checkpoints"))
        .with_panel(
            timeseries(
                "Checkpoint age",
                "Time since the state last became durable (state.checkpoint_interval: 30s).",
                "s",
                query("time() - driftline_checkpoint_timestamp_seconds", "{{instance}}"),
                steps=thresholds(OK, ("orange", 90), ("red", 300)),
                span=8,
            )
        )
        .with_panel(
            timeseries(
                "Checkpoint duration",
                "How long the last checkpoint took.",
                "s",
                query("driftline_checkpoint_duration_seconds", "{{instance}}"),
                span=8,
            )
        )
        .with_panel(
            timeseries(
                "Checkpoint size",
                "Size of the last checkpoint, all partitions.",
                "bytes",
                query("driftline_checkpoint_size_bytes", "{{instance}}"),
                span=8,
            )
        )
        .with_row(Row("Webhooks and retraining"))
        .with_panel(
            timeseries(
                "Webhook deliveries by outcome",
                "Alert and retraining webhook deliveries per second, by sink and outcome.",
                "reqps",
                query(
                    f"sum by (sink, outcome) (rate(driftline_webhook_deliveries_total[{RATE}]))",
                    "{{sink}} {{outcome}}",
                ),
            )
        )
        .with_panel(
            timeseries(
                "Retraining requests",
                "Retraining requests sent per second, by model and target.",
                "reqps",
                query(
                    f"sum by (model, target) (rate(driftline_retraining_requests_total[{RATE}]))",
                    "{{model}} {{target}}",
                ),
            )
        )
    )
