"""Retraining on Vertex AI Pipelines, against a local receiver speaking its REST shape
(``pipelineJobs.create``: bearer token, project and region in the path, a job id that
exists once), with the segment and version of the alert that triggered it."""

from __future__ import annotations

import base64
import datetime
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
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from alerts.delivery import Dispatcher
from alerts.destinations import Destination
from alerts.exceptions import AlertsError
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

    def __init__(self, token: str | set[str]) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.statuses: list[int] = []
        #: the Authorization header of each request
        self.authorizations: list[str | None] = []
        #: the tokens it accepts (a token endpoint's test adds those it issues)
        self.tokens = {token} if isinstance(token, str) else token
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
                    authorization = self.headers.get("Authorization")
                    jobs.authorizations.append(authorization)
                    if authorization not in {f"Bearer {t}" for t in jobs.tokens}:
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


# -- Google Application Default Credentials ------------------------------------------------

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_ENDPOINT = "https://oauth2.googleapis.com/token"


def _b64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class TokenEndpoint:
    """A service account's ``token_uri``, as Google's OAuth 2.0 server answers it: the
    JWT-bearer grant whose assertion is signed (RS256) by the account's private key gets
    ``{access_token, expires_in}``; anything else gets 400 ``invalid_grant``. Each token
    issued lives ``lifetimes[i]`` seconds (the last one thereafter) and is added to
    ``accept`` (the Vertex receiver's tokens); ``refuse`` grants are refused first."""

    def __init__(self, accept: set[str], lifetimes: list[int]) -> None:
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.email = "driftline@acme-ml.iam.gserviceaccount.com"
        self.issued: list[str] = []
        self.claims: list[dict[str, Any]] = []
        self.refuse = 0
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
                status, answer = 400, {"error": "invalid_grant"}
                claims = endpoint.verify(form)
                if claims is not None and endpoint.refuse > 0:
                    endpoint.refuse -= 1
                elif claims is not None:
                    token = f"ya29.tok-{len(endpoint.issued) + 1}"
                    i = min(len(endpoint.issued), len(lifetimes) - 1)
                    endpoint.issued.append(token)
                    endpoint.claims.append(claims)
                    accept.add(token)
                    status = 200
                    answer = {"access_token": token, "expires_in": lifetimes[i]}
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.token_uri = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def verify(self, form: dict[str, list[str]]) -> dict[str, Any] | None:
        """The assertion's claims when the grant is a JWT bearer signed by the key."""
        if form.get("grant_type") != [JWT_BEARER] or len(form.get("assertion", [])) != 1:
            return None
        head, body, signature = form["assertion"][0].split(".")
        if json.loads(_b64(head))["alg"] != "RS256":
            return None
        try:
            self.key.public_key().verify(
                _b64(signature), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256()
            )
        except InvalidSignature:
            return None
        claims: dict[str, Any] = json.loads(_b64(body))
        return claims

    def key_file(self, path: Path) -> Path:
        """A service account key JSON whose ``token_uri`` is this endpoint."""
        pem = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        path.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "project_id": "acme-ml",
                    "private_key_id": "k1",
                    "private_key": pem.decode(),
                    "client_email": self.email,
                    "client_id": "1234567890",
                    "token_uri": self.token_uri,
                }
            )
        )
        return path


def test_vertex_runs_get_google_access_tokens_refreshed_before_they_expire(
    vertex: PipelineJobs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the first token lives 1 s (google-auth refreshes one due within minutes), the next ones
    # an hour; the third grant is refused once (the token endpoint's 400)
    tokens = TokenEndpoint(vertex.tokens, lifetimes=[1, 3600])
    settings = RetrainingSettings.model_validate(
        {
            "model": "fraud",
            "schedule": "0 3 * * 0",
            "target": {
                "type": "vertex",
                "url": vertex.url,
                "project": "acme-ml",
                "region": "europe-west4",
                "template_uri": "gs://acme-pipelines/retrain/pipeline.json",
                "credentials": "google",
            },
        }
    )
    # Application Default Credentials, as google-auth finds them
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tokens.key_file(tmp_path / "sa.json")))
    destination = Destination.for_retraining(settings, {})
    assert tokens.issued == []  # credentials are loaded at start-up, tokens asked when sending
    outbox = Outbox(DirectoryStore(tmp_path / "state"))
    dispatcher = Dispatcher(outbox, [destination], backoff_base=0.05, backoff_max=0.2)
    sink = "retraining.fraud.vertex"
    try:
        for i in range(3):  # one request after the other, each its own pipeline job
            request = retraining_request(
                model="fraud", model_version="v1", reason="schedule", alerts=[],
                requested_at=1_800_000_000.0 + i,
            )  # fmt: skip
            http = retraining_http_request(settings.target, request)
            dispatcher.submit(Notification(request["id"], sink, http, time.time(), "fraud", "v"))
            assert vertex.wait_for(i + 1) == [200] * (i + 1)
        assert vertex.authorizations == [
            "Bearer ya29.tok-1",
            "Bearer ya29.tok-2",  # tok-1 was about to expire: a new one
            "Bearer ya29.tok-2",  # still valid for an hour: no grant
        ]
        assert tokens.issued == ["ya29.tok-1", "ya29.tok-2"]
        claims = tokens.claims[-1]
        # Google's token endpoint is the audience whatever token_uri the key names
        assert (claims["iss"], claims["aud"]) == (tokens.email, GOOGLE_TOKEN_ENDPOINT)
        assert claims["scope"] == "https://www.googleapis.com/auth/cloud-platform"
        assert claims["exp"] - claims["iat"] <= 3600

        # a token endpoint refusing a grant delays the request, never drops it
        tokens.refuse = 1
        vertex.tokens.clear()  # tok-2 revoked: the receiver answers 401 until a refresh
        with destination.tokens._lock:  # type: ignore[union-attr]
            destination.tokens._credentials.expiry = datetime.datetime(2000, 1, 1)  # type: ignore[union-attr]
        request = retraining_request(
            model="fraud", model_version="v1", reason="schedule", alerts=[],
            requested_at=1_800_000_010.0,
        )  # fmt: skip
        http = retraining_http_request(settings.target, request)
        dispatcher.submit(Notification(request["id"], sink, http, time.time(), "fraud", "v"))
        assert vertex.wait_for(4) == [200, 200, 200, 200]
        assert tokens.issued == ["ya29.tok-1", "ya29.tok-2", "ya29.tok-3"]
        assert vertex.authorizations[-1] == "Bearer ya29.tok-3"
        assert dispatcher.wait_idle(10)
        counts = dispatcher.delivery_counts()
        assert (counts[sink, "success"], counts[sink, "retry"]) == (4, 1)
    finally:
        dispatcher.close(timeout=5)
        tokens.server.shutdown()
        tokens.server.server_close()


def test_google_credentials_that_cannot_be_loaded_fail_at_start_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = RetrainingSettings.model_validate(
        {
            "model": "fraud",
            "schedule": "0 3 * * 0",
            "target": {
                "type": "vertex",
                "project": "acme-ml",
                "region": "europe-west4",
                "template_uri": "gs://acme-pipelines/retrain/pipeline.json",
                "credentials": "google",
            },
        }
    )
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "nope.json"))
    with pytest.raises(AlertsError, match=r"retraining.fraud.vertex credentials: .*nope.json"):
        Destination.for_retraining(settings, {})
