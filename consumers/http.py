"""The HTTP endpoints: /metrics, /healthz, /readyz and the JSON API."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

__all__ = ["ApiSource", "HttpServer"]


class ApiSource(Protocol):
    """What the HTTP layer asks of the service."""

    def readiness(self) -> tuple[bool, list[str]]: ...
    def models_json(self) -> list[dict[str, Any]]: ...
    def model_json(self, model: str) -> dict[str, Any] | None: ...
    def alerts_json(self) -> list[dict[str, Any]]: ...


class HttpServer:
    """A threaded HTTP server on its own daemon thread."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry, api: ApiSource) -> None:
        routes: Mapping[str, Callable[[_Handler], None]] = {
            "/metrics": lambda h: h.metrics(registry),
            "/healthz": lambda h: h.send(200, b"ok\n", "text/plain; charset=utf-8"),
            "/readyz": lambda h: h.ready(api),
            "/api/v1/models": lambda h: h.json(200, {"models": api.models_json()}),
            "/api/v1/alerts": lambda h: h.json(200, {"alerts": api.alerts_json()}),
        }

        class Handler(_Handler):
            def do_GET(self) -> None:
                path = urlsplit(self.path).path.rstrip("/") or "/"
                route = routes.get(path)
                if route is not None:
                    route(self)
                elif path.startswith("/api/v1/models/"):
                    model = unquote(path.removeprefix("/api/v1/models/"))
                    data = api.model_json(model)
                    if data is None:
                        self.json(404, {"error": f"unknown model {model!r}"})
                    else:
                        self.json(200, data)
                else:
                    self.json(404, {"error": "not found", "path": path})

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="driftline-http", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    server_version = "driftline"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # scrapes every few seconds would drown the service log

    def send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def json(self, status: int, data: Any) -> None:
        body = json.dumps(_finite(data), allow_nan=False, default=str).encode()
        self.send(status, body, "application/json")

    def metrics(self, registry: CollectorRegistry) -> None:
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        self.send(200, encoder(registry), content_type)

    def ready(self, api: ApiSource) -> None:
        ok, reasons = api.readiness()
        self.json(200 if ok else 503, {"ready": ok, "reasons": reasons})


def _finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such numbers are reported as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value
