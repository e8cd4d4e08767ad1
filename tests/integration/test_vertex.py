"""Retraining on Vertex AI Pipelines, against a local receiver speaking its REST shape
(``pipelineJobs.create``: bearer token, project and region in the path, a job id that
exists once), with the segment and version of the alert that triggered it."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from alerts.delivery import Dispatcher
from alerts.destinations import Destination
from alerts.outbox import Notification, Outbox
from alerts.payloads import retraining_http_request, retraining_request
from alerts.rules import RuleEngine
from consumers.checkpoints import DirectoryStore
from monitor.config import AlertRule, RetrainingSettings

pytestmark = pytest.mark.integration

PATH = re.compile(r"^/v1/projects/(?P<p>[^/]+)/locations/(?P<r>[^/]+)/pipelineJobs$")


class PipelineJobs:
    """``POST /v1/projects/{p}/locations/{r}/pipelineJobs?pipelineJobId=ID``, as Vertex AI
    answers it: 401 without a bearer token, 400 without ``templateUri``, 409 when the job id
    exists, else the created PipelineJob."""

    def __init__(self, token: str) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.statuses: list[int] = []
        jobs = self
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                url = urlsplit(self.path)
                match = PATH.match(url.path)
                job_id = parse_qs(url.query).get("pipelineJobId", [""])[0]
                spec = json.loads(body or b"{}")
                with jobs._lock:
                    if self.headers.get("Authorization") != f"Bearer {token}":
                        status, answer = 401, {"error": {"status": "UNAUTHENTICATED"}}
                    elif match is None or not spec.get("templateUri"):
                        status, answer = 400, {"error": {"status": "INVALID_ARGUMENT"}}
                    elif job_id in jobs.jobs:
                        status, answer = 409, {"error": {"status": "ALREADY_EXISTS"}}
                    else:
                        name = f"projects/{match['p']}/locations/{match['r']}/pipelineJobs/{job_id}"
                        answer = {"name": name, "state": "PIPELINE_STATE_PENDING", **spec}
                        jobs.jobs[job_id] = answer
                        status = 200
                    jobs.statuses.append(status)
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[int]:
        deadline = time.monotonic() + timeout
        while len(self.statuses) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return list(self.statuses)


@pytest.fixture
def vertex() -> Iterator[PipelineJobs]:
    jobs = PipelineJobs("ya29.test-token")
    yield jobs
    jobs.server.shutdown()
    jobs.server.server_close()


def test_a_segment_alert_creates_one_vertex_pipeline_job_for_that_segment(
    vertex: PipelineJobs, tmp_path: Path
) -> None:
    settings = RetrainingSettings.model_validate(
        {
            "model": "fraud",
            "on_alerts": ["SegmentDrift"],
            "target": {
                "type": "vertex",
                "url": vertex.url,  # default: https://europe-west4-aiplatform.googleapis.com
                "project": "acme-ml",
                "region": "europe-west4",
                "template_uri": "gs://acme-pipelines/retrain/pipeline.json",
                "pipeline_root": "gs://acme-pipelines/runs",
                "token_env": "VERTEX_TOKEN",
            },
        }
    )
    rule = AlertRule.model_validate(
        {
            "alert": "SegmentDrift",
            "metric": "driftline_drifted_features_ratio",
            "match": {"model": "fraud"},
            "op": ">=",
            "threshold": 0.5,
        }
    )
    engine = RuleEngine([rule])
    samples = [
        ("driftline_drifted_features_ratio", {"model": "fraud"}, 0.0),
        ("driftline_drifted_features_ratio", {"model": "fraud", "segment": "tags.region=eu"}, 1.0),
    ]
    (transition,) = engine.evaluate(samples, now=1_800_000_000.0)
    request = retraining_request(
        model="fraud",
        model_version="2026-11-01",
        reason="alerts: SegmentDrift",
        alerts=[transition.alert],
        requested_at=1_800_000_000.0,
    )
    assert request["segment"] == "tags.region=eu"
    http = retraining_http_request(settings.target, request)
    destination = Destination.for_retraining(settings, {"VERTEX_TOKEN": "ya29.test-token"})
    outbox = Outbox(DirectoryStore(tmp_path / "state"))
    dispatcher = Dispatcher(outbox, [destination], backoff_base=0.05, backoff_max=0.2)
    try:
        sink = "retraining.fraud.vertex"
        dispatcher.submit(Notification(request["id"], sink, http, time.time(), "fraud", "vertex"))
        assert vertex.wait_for(1) == [200]
        # the same request again (a retry of one that did get through): no second run
        again = Notification("again", sink, http, time.time(), "fraud", "vertex")
        dispatcher.submit(again)
        assert vertex.wait_for(2) == [200, 409]
        assert dispatcher.wait_idle(10)
    finally:
        dispatcher.close(timeout=5)
    (job_id,) = vertex.jobs
    assert job_id == f"driftline-{request['id'].replace('_', '-')}"
    job = vertex.jobs[job_id]
    assert job["name"] == f"projects/acme-ml/locations/europe-west4/pipelineJobs/{job_id}"
    assert job["templateUri"] == "gs://acme-pipelines/retrain/pipeline.json"
    runtime = job["runtimeConfig"]
    assert runtime["gcsOutputDirectory"] == "gs://acme-pipelines/runs"
    params = runtime["parameterValues"]
    assert (params["model"], params["model_version"]) == ("fraud", "2026-11-01")
    assert params["segment"] == "tags.region=eu"
    assert json.loads(params["request"]) == request
