"""The HTTP endpoints as an ASGI application: the web view (/ and /assets/), /metrics,
/healthz, /readyz and the JSON API.

Every route answers GET and HEAD (HEAD: the same status and headers, no body); any other
method is 405. Unknown paths are 404 with a JSON body. With basic auth configured, every
path needs credentials, /healthz included, as in the Prometheus exporters: a request
without valid ones is 401 with ``WWW-Authenticate: Basic``.

Calls into the service (readiness, the JSON API, rendering /metrics, bcrypt) run in
worker threads, so the event loop keeps accepting and timing out connections meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import Executor
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qs, unquote

from prometheus_client import CollectorRegistry

from consumers import web_view
from consumers.basic_auth import BasicAuth, parse_basic
from consumers.metrics_snapshot import MetricsSnapshot

__all__ = ["ApiSource", "HttpApp"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
T = TypeVar("T")

_ALLOWED = (b"GET", b"HEAD")
_TEXT = "text/plain; charset=utf-8"


class ApiSource(Protocol):
    """What the HTTP layer asks of the service."""

    def readiness(self) -> tuple[bool, list[str]]: ...
    def models_json(self) -> list[dict[str, Any]]: ...
    def model_json(
        self, model: str, history_since: float | None = None
    ) -> dict[str, Any] | None: ...
    def alerts_json(self) -> list[dict[str, Any]]: ...


class _Response:
    def __init__(self, status: int, body: bytes, content_type: str, **headers: str) -> None:
        self.status, self.body = status, body
        self.headers = [
            (b"content-type", content_type.encode("latin-1")),
            (b"content-length", str(len(body)).encode()),
            *(
                (k.replace("_", "-").lower().encode(), v.encode("latin-1"))
                for k, v in headers.items()
            ),
        ]


def _json(status: int, data: Any, **headers: str) -> _Response:
    body = json.dumps(finite(data), allow_nan=False, default=str).encode()
    return _Response(status, body, "application/json", **headers)


class HttpApp:
    """The routes over ``registry`` and ``api``; ``auth`` None serves everyone.

    ``work`` runs the service calls and renderings, ``auth_work`` the bcrypt checks (apart,
    so that a stream of wrong passwords does not hold up /metrics).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        api: ApiSource,
        *,
        metrics_max_age: float,
        work: Executor,
        auth: BasicAuth | None = None,
        auth_work: Executor | None = None,
    ) -> None:
        self._api = api
        self._work = work
        self._auth = auth
        self._auth_work = auth_work or work
        self.metrics = MetricsSnapshot(registry, metrics_max_age, work)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # no lifespan or websocket here
        headers = dict(scope["headers"])
        response = await self._respond(scope, headers)
        await send(
            {"type": "http.response.start", "status": response.status, "headers": response.headers}
        )
        body = b"" if scope["method"] == "HEAD" else response.body
        await send({"type": "http.response.body", "body": body})

    async def _respond(self, scope: Scope, headers: dict[bytes, bytes]) -> _Response:
        if self._auth is not None and not await self._authorized(headers.get(b"authorization")):
            return _Response(
                401, b"unauthorized\n", _TEXT, www_authenticate='Basic realm="driftline"'
            )
        method = scope["method"].encode()
        if method not in _ALLOWED:
            error = {"error": "method not allowed", "method": scope["method"]}
            return _json(405, error, allow="GET, HEAD")
        # the path as sent (percent-escapes kept), as routes are matched on it
        raw = scope.get("raw_path") or scope["path"].encode()
        path = raw.decode("latin-1").split("?", 1)[0].rstrip("/") or "/"
        if path == "/metrics":
            accept = headers.get(b"accept", b"").decode("latin-1")
            body, content_type = await self.metrics.get(accept)
            return _Response(200, body, content_type)
        if path == "/":
            return _Response(
                200, web_view.page(), "text/html; charset=utf-8", cache_control="no-cache"
            )
        if path.startswith("/assets/"):
            name = path.removeprefix("/assets/")
            if name in web_view.ASSETS:
                kind = web_view.ASSETS[name]
                return _Response(200, web_view.asset(name), kind, cache_control="max-age=3600")
        if path == "/healthz":
            return _Response(200, b"ok\n", _TEXT)
        if path == "/readyz":
            ok, reasons = await self._call(self._api.readiness)
            return _json(200 if ok else 503, {"ready": ok, "reasons": reasons})
        if path == "/api/v1/models":
            return await self._call(lambda: _json(200, {"models": self._api.models_json()}))
        if path == "/api/v1/alerts":
            return await self._call(lambda: _json(200, {"alerts": self._api.alerts_json()}))
        if path.startswith("/api/v1/models/"):
            model = unquote(path.removeprefix("/api/v1/models/"))
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            given = query.get("history_since", [""])[-1]
            since = _number(given)
            if given and since is None:
                return _json(400, {"error": "history_since: a finite number of epoch seconds"})
            # built and encoded in a worker: the explanations and the history are the
            # largest answers served, and the event loop keeps to its CPU share
            return await self._call(self._model, model, since)
        return _json(404, {"error": "not found", "path": path})

    def _model(self, model: str, since: float | None) -> _Response:
        data = self._api.model_json(model, since)
        if data is None:
            return _json(404, {"error": f"unknown model {model!r}"})
        return _json(200, data)

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._work, fn, *args)

    async def _authorized(self, header: bytes | None) -> bool:
        assert self._auth is not None
        credentials = parse_basic(header)
        if credentials is None:
            return False
        if self._auth.remembered(*credentials):
            return True
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._auth_work, self._auth.check, *credentials)


def _number(text: str) -> float | None:
    """A finite number given as a query parameter, or None.

    >>> _number("12.5"), _number(""), _number("nan"), _number("x")
    (12.5, None, None, None)
    """
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def finite(value: Any) -> Any:
    """JSON has no NaN or infinity: such numbers are reported as null.

    >>> finite({"a": [1.0, float("nan")], "b": float("inf")})
    {'a': [1.0, None], 'b': None}
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite(v) for v in value]
    return value
