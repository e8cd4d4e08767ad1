"""Pure builders of what driftline sends: alert notifications and retraining requests.

- :func:`webhook_body`: Alertmanager's webhook body (version "4"), so receivers written
  for Alertmanager work unchanged;
- :func:`alertmanager_body`: the body of Alertmanager's ``POST /api/v2/alerts``;
- :func:`slack_body`: a Slack incoming-webhook message;
- :func:`retraining_request`: the ``retraining.requested`` document (see README), and
  :func:`retraining_http_request`: the HTTP request that carries it to a target.

Nothing here reads the clock or the environment: times and ids are passed in. Requests
hold no credentials, since they are stored in the outbox: the destination adds its bearer
token when sending, and signs each attempt then (each carries its own timestamp).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from alerts.formats import format_value, rfc3339
from alerts.rules import Alert, AlertState
from monitor.config import RetrainingTarget, Sink

__all__ = [
    "HttpRequest",
    "alert_item",
    "alertmanager_body",
    "json_request",
    "retraining_http_request",
    "retraining_request",
    "sink_request",
    "slack_body",
    "webhook_body",
]

_USER_AGENT = "driftline"
#: headers that carry credentials (lower case): never part of a stored request
_CREDENTIALS = frozenset({"authorization", "proxy-authorization"})


@dataclass(frozen=True)
class HttpRequest:
    """A request ready to send; ``body`` is the exact JSON text (signatures cover it)."""

    method: str
    url: str
    body: str
    headers: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "url": self.url,
            "headers": dict(self.headers),
            "body": self.body,
        }

    def credentials(self) -> list[str]:
        """The names of the headers that carry credentials (none in a request built here)."""
        return [k for k in self.headers if k.lower() in _CREDENTIALS]

    def without_credentials(self) -> HttpRequest:
        """This request without its credential headers."""
        kept = {k: v for k, v in self.headers.items() if k.lower() not in _CREDENTIALS}
        return HttpRequest(self.method, self.url, self.body, kept)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HttpRequest:
        return cls(
            str(data["method"]),
            str(data["url"]),
            str(data["body"]),
            {str(k): str(v) for k, v in data["headers"].items()},
        )


def json_request(
    url: str, payload: Any, *, headers: Mapping[str, str] | None = None, method: str = "POST"
) -> HttpRequest:
    """A JSON request with driftline's default headers (``headers`` are added last)."""
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    base = {"Content-Type": "application/json", "User-Agent": _USER_AGENT}
    return HttpRequest(method, url, body, {**base, **(headers or {})})


def _generator_url(external_url: str, alert: Alert) -> str:
    if not external_url:
        return ""
    model = alert.model
    path = f"/api/v1/models/{model}" if model else "/api/v1/alerts"
    return external_url.rstrip("/") + path


def _status(alert: Alert) -> str:
    return "firing" if alert.state in (AlertState.FIRING, AlertState.PENDING) else "resolved"


def alert_item(alert: Alert, *, external_url: str = "") -> dict[str, Any]:
    """One entry of a webhook body's ``alerts``."""
    return {
        "status": _status(alert),
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "startsAt": rfc3339(alert.active_at if alert.starts_at is None else alert.starts_at),
        "endsAt": rfc3339(alert.ends_at if _status(alert) == "resolved" else None),
        "generatorURL": _generator_url(external_url, alert),
        "fingerprint": alert.fingerprint,
    }


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in sorted(first.items()) if all(m.get(k) == v for m in maps[1:])}


def webhook_body(
    alerts: Sequence[Alert], *, receiver: str, external_url: str = ""
) -> dict[str, Any]:
    """Alertmanager's webhook body, version "4". The group is the alerts' common
    ``alertname`` and ``model``; ``status`` is firing while any alert fires."""
    common = _common([a.labels for a in alerts])
    group = {k: common[k] for k in ("alertname", "model") if k in common}
    key = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in group.items())
    firing = any(_status(a) == "firing" for a in alerts)
    return {
        "version": "4",
        "groupKey": "{}:{" + key + "}",
        "truncatedAlerts": 0,
        "status": "firing" if firing else "resolved",
        "receiver": receiver,
        "groupLabels": group,
        "commonLabels": common,
        "commonAnnotations": _common([a.annotations for a in alerts]),
        "externalURL": external_url,
        "alerts": [alert_item(a, external_url=external_url) for a in alerts],
    }


def alertmanager_body(
    alerts: Sequence[Alert], *, external_url: str = "", valid_until: float | None = None
) -> list[dict[str, Any]]:
    """The body of Alertmanager's ``POST /api/v2/alerts``.

    A firing alert ends at ``valid_until`` (push again before then, as Prometheus does
    every minute) or, when ``None``, at Alertmanager's ``resolve_timeout``.
    """
    out = []
    for a in alerts:
        resolved = _status(a) == "resolved"
        item = alert_item(a, external_url=external_url)
        out.append(
            {
                "labels": item["labels"],
                "annotations": item["annotations"],
                "startsAt": item["startsAt"],
                "endsAt": rfc3339(a.ends_at if resolved else valid_until),
                "generatorURL": item["generatorURL"],
            }
        )
    return out


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_body(alerts: Sequence[Alert], *, external_url: str = "") -> dict[str, str]:
    """A Slack incoming-webhook message: a header line, then one line per alert."""
    firing = [a for a in alerts if _status(a) == "firing"]
    names = sorted({a.name for a in alerts})
    models = sorted({a.model for a in alerts if a.model})
    status = f"FIRING:{len(firing)}" if firing else "RESOLVED"
    head = f"[{status}] {', '.join(names)}"
    if models:
        head += f" (model {', '.join(models)})"
    lines = [f"*{_slack_escape(head)}*"]
    for a in alerts:
        text = a.annotations.get("summary") or ", ".join(
            f"{k}={v}" for k, v in a.labels.items() if k not in ("alertname", "severity")
        )
        mark = ":red_circle:" if _status(a) == "firing" else ":white_check_mark:"
        value = f" (value {format_value(a.value)})" if _status(a) == "firing" else ""
        lines.append(f"{mark} {_slack_escape(text)}{value}")
    if external_url:
        lines.append(f"<{external_url.rstrip('/')}/api/v1/alerts|driftline alerts>")
    return {"text": "\n".join(lines)}


def sink_request(
    sink: Sink,
    alerts: Sequence[Alert],
    *,
    external_url: str = "",
    valid_until: float | None = None,
) -> HttpRequest | None:
    """The request that tells ``sink`` about ``alerts``; ``None`` when nothing is left to
    send (only resolved alerts and the sink does not want them)."""
    chosen = [a for a in alerts if sink.send_resolved or _status(a) == "firing"]
    if not chosen:
        return None
    payload: Any
    if sink.type == "webhook":
        payload = webhook_body(chosen, receiver=sink.name, external_url=external_url)
    elif sink.type == "alertmanager":
        payload = alertmanager_body(chosen, external_url=external_url, valid_until=valid_until)
        return json_request(sink.url.rstrip("/") + "/api/v2/alerts", payload)
    else:
        payload = slack_body(chosen, external_url=external_url)
    return json_request(sink.url, payload)


def retraining_request(
    *,
    model: str,
    model_version: str | None,
    reason: str,
    alerts: Sequence[Alert],
    requested_at: float,
    request_id: str | None = None,
    external_url: str = "",
) -> dict[str, Any]:
    """The retraining request of the README. Without ``request_id`` the id is derived from the
    model, the reason and the time, so the same decision always gets the same id."""
    if request_id is None:
        digest = hashlib.sha256(f"{model}\n{reason}\n{requested_at!r}".encode()).hexdigest()
        request_id = f"rt_{digest[:24]}"
    segments = sorted({a.labels["segment"] for a in alerts if a.labels.get("segment")})
    versions = sorted({a.labels["model_version"] for a in alerts if a.labels.get("model_version")})
    return {
        "type": "retraining.requested",
        "id": request_id,
        "model": model,
        # the version whose series fired wins over the one the model serves
        "model_version": versions[0] if len(versions) == 1 else model_version,
        # the slice whose alert triggered it: ``None`` for the whole model or several
        "segment": segments[0] if len(segments) == 1 else None,
        "segments": segments,
        "reason": reason,
        "alerts": [alert_item(a, external_url=external_url) for a in alerts],
        "requested_at": rfc3339(requested_at),
    }


def retraining_http_request(target: RetrainingTarget, request: Mapping[str, Any]) -> HttpRequest:
    """The HTTP request that asks ``target`` to retrain, without the bearer token of
    ``target.token_env`` (its destination adds it when sending)."""
    if target.type == "vertex":
        return _vertex_request(target, request)
    assert target.url is not None  # required by the settings for every other type
    base = target.url.rstrip("/")
    headers: dict[str, str] = {}
    if target.type == "airflow":
        # dag_run_id makes a retry of a request that did get through a 409, not a 2nd run
        body: Any = {
            "dag_run_id": f"driftline-{request['id']}",
            "logical_date": None,
            "conf": dict(request),
        }
        return json_request(f"{base}/api/v2/dags/{target.dag_id}/dagRuns", body, headers=headers)
    if target.type == "github":
        headers |= {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
        body = {"event_type": target.event_type, "client_payload": dict(request)}
        return json_request(f"{base}/repos/{target.repo}/dispatches", body, headers=headers)
    if target.type == "kubeflow":
        body = {
            "display_name": f"driftline retraining of {request['model']} ({request['id']})",
            "description": str(request["reason"]),
            "pipeline_version_reference": {"pipeline_id": target.pipeline_id},
            "runtime_config": {"parameters": _pipeline_parameters(request)},
        }
        return json_request(f"{base}/apis/v2beta1/runs", body, headers=headers)
    return json_request(target.url, dict(request), headers=headers)


def _pipeline_parameters(request: Mapping[str, Any]) -> dict[str, Any]:
    """What a pipeline run (Kubeflow, Vertex AI) is told: what to retrain, the slice and
    why, and the whole request as JSON."""
    return {
        "model": request["model"],
        "model_version": request["model_version"] or "",
        "segment": request.get("segment") or "",
        "reason": request["reason"],
        "request_id": request["id"],
        "request": json.dumps(request, separators=(",", ":")),
    }


def _vertex_request(target: RetrainingTarget, request: Mapping[str, Any]) -> HttpRequest:
    """A Vertex AI Pipelines ``pipelineJobs.create``: a run of the compiled pipeline at
    ``template_uri`` whose parameters say what to retrain and why. The job id is derived
    from the request id, so a retry of a request that did get through is a 409 (already
    exists), not a second run."""
    base = (target.url or f"https://{target.region}-aiplatform.googleapis.com").rstrip("/")
    job_id = "driftline-" + re.sub(r"[^a-z0-9-]", "-", str(request["id"]).lower())[:118]
    runtime: dict[str, Any] = {"parameterValues": _pipeline_parameters(request)}
    if target.pipeline_root:
        runtime["gcsOutputDirectory"] = target.pipeline_root
    body: dict[str, Any] = {
        "displayName": f"driftline retraining of {request['model']}"[:128],
        "templateUri": target.template_uri,
        "runtimeConfig": runtime,
        "labels": {"driftline-model": _gcp_label(str(request["model"]))},
    }
    if target.service_account:
        body["serviceAccount"] = target.service_account
    path = f"/v1/projects/{target.project}/locations/{target.region}/pipelineJobs"
    return json_request(f"{base}{path}?pipelineJobId={job_id}", body)


def _gcp_label(value: str) -> str:
    """A Google Cloud label value: lowercase letters, digits, ``_`` and ``-``, 63 at most."""
    return re.sub(r"[^a-z0-9_-]", "-", value.lower())[:63]
