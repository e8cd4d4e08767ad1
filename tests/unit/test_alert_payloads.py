"""Notification bodies, retraining requests per target, and the retraining policy."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from alerts.formats import fingerprint
from alerts.payloads import (
    alertmanager_body,
    retraining_http_request,
    retraining_request,
    sink_request,
    slack_body,
    webhook_body,
)
from alerts.promrules import export_rules
from alerts.retraining import RetrainingPolicy, next_cron_time
from alerts.rules import Alert, AlertState, RuleEngine, Transition
from monitor.config import (
    AlertRule,
    DriftlineConfig,
    RetrainingSettings,
    RetrainingTarget,
    Sink,
    parse_cron,
)

T0 = datetime(2026, 11, 27, 19, 0, tzinfo=UTC).timestamp()  # a Friday
ZERO = "0001-01-01T00:00:00Z"


def alert(
    state: AlertState = AlertState.FIRING,
    feature: str = "amount",
    name: str = "FeatureDrift",
    model: str = "fraud",
) -> Alert:
    labels = {"alertname": name, "feature": feature, "model": model, "severity": "warning"}
    resolved = state is AlertState.RESOLVED
    return Alert(
        labels=labels,
        annotations={"summary": f"{feature} drifted on {model}"},
        state=state,
        value=1.0,
        active_at=T0 - 60,
        starts_at=T0,
        ends_at=T0 + 600 if resolved else None,
        fingerprint=fingerprint(labels),
    )


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_webhook_body_is_alertmanagers_version_4() -> None:
    body = webhook_body(
        [alert(), alert(AlertState.RESOLVED, "age")],
        receiver="ops",
        external_url="http://driftline:9108",
    )
    assert set(body) == {
        "version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels",
        "commonLabels", "commonAnnotations", "externalURL", "alerts",
    }  # fmt: skip
    assert body["version"] == "4"
    assert body["status"] == "firing"
    assert body["receiver"] == "ops"
    assert body["truncatedAlerts"] == 0
    assert body["externalURL"] == "http://driftline:9108"
    assert body["groupLabels"] == {"alertname": "FeatureDrift", "model": "fraud"}
    assert body["groupKey"] == '{}:{alertname="FeatureDrift", model="fraud"}'
    assert body["commonLabels"] == {
        "alertname": "FeatureDrift",
        "model": "fraud",
        "severity": "warning",
    }
    assert body["commonAnnotations"] == {}  # the summaries differ
    firing, resolved = body["alerts"]
    for a in body["alerts"]:
        assert set(a) == {
            "status", "labels", "annotations", "startsAt", "endsAt", "generatorURL",
            "fingerprint",
        }  # fmt: skip
        assert a["fingerprint"] == fingerprint(a["labels"])
        assert a["generatorURL"] == "http://driftline:9108/api/v1/models/fraud"
        assert parse_time(a["startsAt"]) == T0
    assert (firing["status"], firing["endsAt"]) == ("firing", ZERO)
    assert resolved["status"] == "resolved"
    assert parse_time(resolved["endsAt"]) == T0 + 600
    assert firing["annotations"] == {"summary": "amount drifted on fraud"}


def test_webhook_body_of_resolved_alerts_only_is_resolved() -> None:
    body = webhook_body([alert(AlertState.RESOLVED)], receiver="ops")
    assert body["status"] == "resolved"
    assert body["commonAnnotations"] == {"summary": "amount drifted on fraud"}
    assert body["alerts"][0]["generatorURL"] == ""


def test_alertmanager_v2_body() -> None:
    body = alertmanager_body(
        [alert(), alert(AlertState.RESOLVED, "age")],
        external_url="http://d:9108",
        valid_until=T0 + 240,
    )
    assert [set(a) for a in body] == [
        {"labels", "annotations", "startsAt", "endsAt", "generatorURL"}
    ] * 2
    assert [parse_time(a["endsAt"]) for a in body] == [T0 + 240, T0 + 600]
    assert body[0]["labels"]["feature"] == "amount"
    assert alertmanager_body([alert()])[0]["endsAt"] == ZERO  # Alertmanager's resolve_timeout


def test_slack_body_is_text_with_one_line_per_alert() -> None:
    a = alert(feature="<b>&")
    body = slack_body([a, alert(AlertState.RESOLVED, "age")], external_url="http://d")
    assert set(body) == {"text"}
    lines = body["text"].splitlines()
    assert lines[0] == "*[FIRING:1] FeatureDrift (model fraud)*"
    assert lines[1] == ":red_circle: &lt;b&gt;&amp; drifted on fraud (value 1)"
    assert lines[2] == ":white_check_mark: age drifted on fraud"
    assert lines[3] == "<http://d/api/v1/alerts|driftline alerts>"


@pytest.mark.parametrize("kind", ["webhook", "alertmanager", "slack"])
def test_sink_request_per_type_and_send_resolved(kind: str) -> None:
    sink = Sink(name="s", type=kind, url="http://h:1/hook", send_resolved=False)
    req = sink_request(sink, [alert(), alert(AlertState.RESOLVED, "age")])
    assert req is not None
    assert req.method == "POST"
    assert req.headers["Content-Type"] == "application/json"
    payload = json.loads(req.body)
    expected_url = "http://h:1/hook/api/v2/alerts" if kind == "alertmanager" else sink.url
    assert req.url == expected_url
    text = json.dumps(payload)
    assert "amount" in text
    assert "age" not in text
    assert sink_request(sink, [alert(AlertState.RESOLVED)]) is None


def request(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": "fraud",
        "model_version": "2026-11-01",
        "reason": "alerts: FeatureDrift",
        "alerts": [alert()],
        "requested_at": T0,
    }
    return retraining_request(**(base | kw))


def test_retraining_request_document() -> None:
    r = request()
    assert set(r) == {
        "type",
        "id",
        "model",
        "model_version",
        "segment",
        "segments",
        "reason",
        "alerts",
        "requested_at",
    }
    assert (r["segment"], r["segments"]) == (None, [])
    assert r["type"] == "retraining.requested"
    assert (r["model"], r["model_version"]) == ("fraud", "2026-11-01")
    assert r["requested_at"] == "2026-11-27T19:00:00.000Z"
    assert r["alerts"][0]["labels"]["feature"] == "amount"
    assert r["id"] == request()["id"] != request(requested_at=T0 + 1)["id"]
    assert request(request_id="rt_given")["id"] == "rt_given"


def target(**kw: Any) -> RetrainingTarget:
    return RetrainingTarget.model_validate({"url": "https://orch.example/base/"} | kw)


def test_http_target_gets_the_request_as_is() -> None:
    r = request()
    req = retraining_http_request(target(type="http"), r)
    assert (req.method, req.url) == ("POST", "https://orch.example/base/")
    assert json.loads(req.body) == r
    assert "Authorization" not in req.headers


def test_airflow_target_triggers_a_dag_run() -> None:
    r = request()
    req = retraining_http_request(target(type="airflow", dag_id="retrain_fraud"), r)
    assert req.url == "https://orch.example/base/api/v2/dags/retrain_fraud/dagRuns"
    assert req.credentials() == []  # the destination adds the token when sending
    body = json.loads(req.body)
    assert body == {"dag_run_id": f"driftline-{r['id']}", "logical_date": None, "conf": r}


def test_github_target_sends_a_repository_dispatch() -> None:
    r = request()
    t = target(type="github", repo="acme/models", token_env="GH_TOKEN", url="https://api.gh")
    req = retraining_http_request(t, r)
    assert (req.method, req.url) == ("POST", "https://api.gh/repos/acme/models/dispatches")
    assert req.headers["Accept"] == "application/vnd.github+json"
    assert req.credentials() == []
    assert json.loads(req.body) == {"event_type": "driftline-retrain", "client_payload": r}


def test_kubeflow_target_creates_a_pipeline_run() -> None:
    r = request(model_version=None)
    req = retraining_http_request(target(type="kubeflow", pipeline_id="p-123"), r)
    assert req.url == "https://orch.example/base/apis/v2beta1/runs"
    body = json.loads(req.body)
    assert body["pipeline_version_reference"] == {"pipeline_id": "p-123"}
    params = body["runtime_config"]["parameters"]
    assert params["model"] == "fraud"
    assert params["model_version"] == ""
    assert params["request_id"] == r["id"]
    assert json.loads(params["request"]) == r
    assert body["display_name"]


def test_the_request_names_the_segment_and_version_whose_alerts_triggered_it() -> None:
    eu = alert()
    eu.labels["segment"] = "tags.region=eu"
    eu.labels["model_version"] = "v2"
    r = request(alerts=[eu])
    assert (r["segment"], r["segments"], r["model_version"]) == (
        "tags.region=eu",
        ["tags.region=eu"],
        "v2",
    )
    us = alert(feature="age")
    us.labels["segment"] = "tags.region=us"
    r = request(alerts=[eu, us])
    assert (r["segment"], r["segments"]) == (None, ["tags.region=eu", "tags.region=us"])
    assert r["model_version"] == "v2"


def test_vertex_target_creates_a_pipeline_job_in_its_project_and_region() -> None:
    r = request()
    t = RetrainingTarget.model_validate(
        {
            "type": "vertex",
            "project": "acme-ml",
            "region": "us-central1",
            "template_uri": "https://us-central1-kfp.pkg.dev/acme-ml/repo/retrain/v1",
            "token_env": "VERTEX_TOKEN",
            "service_account": "runner@acme-ml.iam.gserviceaccount.com",
        }
    )
    req = retraining_http_request(t, r)
    job_id = "driftline-" + r["id"].replace("_", "-")
    assert req.url == (
        "https://us-central1-aiplatform.googleapis.com/v1/projects/acme-ml/locations/"
        f"us-central1/pipelineJobs?pipelineJobId={job_id}"
    )
    assert req.credentials() == []  # the destination adds the token when sending
    body = json.loads(req.body)
    assert body["templateUri"] == t.template_uri
    assert body["serviceAccount"] == t.service_account
    assert "gcsOutputDirectory" not in body["runtimeConfig"]
    assert body["runtimeConfig"]["parameterValues"]["model_version"] == "2026-11-01"
    assert body["labels"] == {"driftline-model": "fraud"}


@pytest.mark.parametrize(
    ("target_fields", "error"),
    [
        ({"type": "vertex", "region": "us-central1", "template_uri": "gs://b/p.json",
          "token_env": "T"}, "needs project"),
        ({"type": "vertex", "project": "acme-ml", "region": "us-central1",
          "template_uri": "gs://b/p.json"}, "needs credentials: google .* or token_env"),
        ({"type": "http"}, "needs url"),
        ({"type": "http", "url": "http://ci", "project": "acme-ml"}, "vertex targets only"),
    ],
)  # fmt: skip
def test_vertex_and_url_requirements_name_the_key(
    target_fields: dict[str, Any], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        RetrainingTarget.model_validate(target_fields)


def settings(**kw: Any) -> RetrainingSettings:
    base: dict[str, Any] = {
        "model": "fraud",
        "on_alerts": ["FeatureDrift"],
        "cooldown": "6h",
        "max_per_day": 2,
        "target": {"type": "http", "url": "http://ci/retrain"},
    }
    return RetrainingSettings.model_validate(base | kw)


def fired(at: float, name: str = "FeatureDrift", model: str = "fraud") -> Transition:
    a = alert(name=name, model=model)
    return Transition(a, AlertState.PENDING, AlertState.FIRING, at)


def test_policy_requests_on_firing_of_its_alerts_for_its_model_only() -> None:
    p = RetrainingPolicy(settings(), now=T0)
    assert p.on_transitions([fired(T0, name="Other")], T0) is None
    assert p.on_transitions([fired(T0, model="churn")], T0) is None
    resolved = Transition(alert(AlertState.RESOLVED), AlertState.FIRING, AlertState.RESOLVED, T0)
    assert p.on_transitions([resolved], T0) is None
    trigger = p.on_transitions([fired(T0), fired(T0)], T0)
    assert trigger is not None
    assert (trigger.model, trigger.reason, len(trigger.alerts)) == (
        "fraud",
        "alerts: FeatureDrift",
        2,
    )
    assert not trigger.scheduled


def test_policy_cooldown_and_rolling_daily_maximum() -> None:
    p = RetrainingPolicy(settings(cooldown="6h", max_per_day=2), now=T0)
    h = 3600.0
    times = [0, 1, 5.9, 6, 7, 12, 20, 24.1, 29, 30.1]
    made = [t for t in times if p.on_transitions([fired(T0 + t * h)], T0 + t * h)]
    # 0 ok; 1, 5.9 cooldown; 6 ok (2nd of the day); 12 and 20: 2 in the last 24h;
    # 24.1: the request at 0 left the day; 29: cooldown; 30.1: 6 left the day
    assert made == [0, 6, 24.1, 30.1]


def test_policy_snapshot_keeps_the_limits_across_a_restart() -> None:
    p = RetrainingPolicy(settings(), now=T0)
    assert p.on_transitions([fired(T0)], T0)
    q = RetrainingPolicy(settings(), now=T0 + 60)
    q.restore(json.loads(json.dumps(p.snapshot())))
    assert q.on_transitions([fired(T0 + 3600)], T0 + 3600) is None


def test_cron_schedule_is_due_once_per_run_and_catches_up_once() -> None:
    p = RetrainingPolicy(settings(on_alerts=[], schedule="0 3 * * sun"), now=T0)  # Fri 19:00
    sunday_3am = datetime(2026, 11, 29, 3, 0, tzinfo=UTC).timestamp()
    assert not p.due(sunday_3am - 60)
    trigger = p.on_schedule(sunday_3am + 30)
    assert trigger is not None
    assert trigger.scheduled
    assert trigger.reason == "schedule: 0 3 * * sun"
    assert p.on_schedule(sunday_3am + 90) is None
    # down for three weeks: one catch-up run, not three
    assert p.due(sunday_3am + 21 * 86400 + 3600)
    assert not p.due(sunday_3am + 21 * 86400 + 7200)


def test_a_scheduled_run_counts_towards_the_cooldown() -> None:
    p = RetrainingPolicy(settings(schedule="0 * * * *"), now=T0)
    assert p.on_schedule(T0 + 3600) is not None
    assert p.on_transitions([fired(T0 + 3700)], T0 + 3700) is None


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("*/15 * * * *", "2026-11-27T19:00:00", "2026-11-27T19:15:00"),
        ("0 3 * * 0", "2026-11-27T19:00:00", "2026-11-29T03:00:00"),
        ("0 0 1 * *", "2026-12-15T00:00:00", "2027-01-01T00:00:00"),
        ("30 2 29 2 *", "2026-03-01T00:00:00", "2028-02-29T02:30:00"),
        # day of month OR day of week when both are restricted (Vixie cron)
        ("0 0 13 * fri", "2026-11-27T00:00:00", "2026-12-04T00:00:00"),
        ("0 0 13 * fri", "2026-12-05T00:00:00", "2026-12-11T00:00:00"),
        ("59 23 31 dec *", "2026-12-31T23:59:00", "2027-12-31T23:59:00"),
    ],
)
def test_next_cron_time(expr: str, after: str, expected: str) -> None:
    start = datetime.fromisoformat(after).replace(tzinfo=UTC).timestamp()
    got = datetime.fromtimestamp(next_cron_time(parse_cron(expr), start), UTC)
    assert got.isoformat() == expected + "+00:00"


def test_a_schedule_that_never_matches_is_refused() -> None:
    with pytest.raises(ValueError, match="matches no date"):
        RetrainingPolicy(settings(schedule="0 0 30 2 *"), now=T0)


def test_exported_prometheus_rules_mirror_the_config() -> None:
    config = DriftlineConfig.model_validate({
        "models": [{"name": "fraud", "reference": {"path": "r.csv"}}],
        "alerts": {"rules": [
            {"alert": "FeatureDrift", "metric": "driftline_feature_drifted",
             "match": {"model": "fraud"}, "threshold": 1, "for": "90s",
             "keep_firing_for": "5m", "labels": {"team": "risk"},
             "annotations": {"summary": "{{ feature }} drifted ({{ value }})"}},
            {"alert": "LowAccuracy", "metric": "driftline_model_performance",
             "match": {"metric": "accuracy"}, "op": "<", "threshold": 0.8,
             "severity": "critical"},
        ]},
    })  # fmt: skip
    doc = yaml.safe_load(export_rules(config))
    first, second = doc["groups"][0]["rules"]
    assert first == {
        "alert": "FeatureDrift",
        "expr": 'sum without (instance, pod) (driftline_feature_drifted{model="fraud"}) >= 1',
        "for": "1m30s",
        "keep_firing_for": "5m",
        "labels": {"team": "risk", "severity": "warning"},
        "annotations": {"summary": "{{ $labels.feature }} drifted ({{ $value }})"},
    }
    assert second == {
        "alert": "LowAccuracy",
        "expr": "sum without (instance, pod) "
        '(driftline_model_performance{metric="accuracy"}) < 0.8',
        "labels": {"severity": "critical"},
    }


def test_engine_transitions_become_webhook_alerts() -> None:
    engine = RuleEngine(
        [
            AlertRule(
                alert="FeatureDrift",
                metric="driftline_feature_drifted",
                threshold=1,
                annotations={"summary": "{{ feature }}"},
            )
        ]
    )
    sample = ("driftline_feature_drifted", {"model": "fraud", "feature": "age"}, 1.0)
    (fire,) = engine.evaluate([sample], now=T0)
    (resolve,) = engine.evaluate([], now=T0 + 60)
    body = webhook_body([fire.alert, resolve.alert], receiver="ops")
    started, ended = body["alerts"]
    assert (started["status"], started["endsAt"]) == ("firing", ZERO)
    assert (ended["status"], parse_time(ended["endsAt"])) == ("resolved", T0 + 60)
    assert parse_time(started["startsAt"]) == parse_time(ended["startsAt"]) == T0
    assert started["fingerprint"] == ended["fingerprint"]
    assert started["annotations"] == {"summary": "age"}
