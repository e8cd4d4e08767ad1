"""Alert rules, sinks, webhook delivery and retraining requests.

:mod:`alerts.rules`, :mod:`alerts.formats`, :mod:`alerts.payloads`,
:mod:`alerts.retraining` and :mod:`alerts.promrules` are pure (time is passed in);
:mod:`alerts.destinations`, :mod:`alerts.outbox` and :mod:`alerts.delivery` are the I/O
edge: secrets from the environment (and Google access tokens refreshed by
:mod:`alerts.google_credentials`), a durable outbox and the threads that send it
(:mod:`alerts.bounded_http`: one request within one deadline).
"""

from alerts.delivery import Dispatcher, backoff_delay, retry_after_seconds
from alerts.destinations import Destination
from alerts.exceptions import AlertsError, CredentialsError, OutboxError
from alerts.formats import (
    fingerprint,
    format_value,
    render_template,
    rfc3339,
    to_prometheus_template,
)
from alerts.outbox import Notification, Outbox, new_notification_id
from alerts.payloads import (
    HttpRequest,
    alert_item,
    alertmanager_body,
    json_request,
    retraining_http_request,
    retraining_request,
    sink_request,
    slack_body,
    webhook_body,
)
from alerts.promrules import export_rules, prometheus_duration, rule_expr
from alerts.retraining import RetrainingPolicy, RetrainingTrigger, next_cron_time
from alerts.rules import Alert, AlertState, RuleEngine, Sample, Transition

__all__ = [
    "Alert",
    "AlertState",
    "AlertsError",
    "CredentialsError",
    "Destination",
    "Dispatcher",
    "HttpRequest",
    "Notification",
    "Outbox",
    "OutboxError",
    "RetrainingPolicy",
    "RetrainingTrigger",
    "RuleEngine",
    "Sample",
    "Transition",
    "alert_item",
    "alertmanager_body",
    "backoff_delay",
    "export_rules",
    "fingerprint",
    "format_value",
    "json_request",
    "new_notification_id",
    "next_cron_time",
    "prometheus_duration",
    "render_template",
    "retraining_http_request",
    "retraining_request",
    "retry_after_seconds",
    "rfc3339",
    "rule_expr",
    "sink_request",
    "slack_body",
    "to_prometheus_template",
    "webhook_body",
]
