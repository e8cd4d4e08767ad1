"""The HTTP server: uvicorn on one event loop in one daemon thread, fit for an open network.

No thread per connection: every connection is a coroutine's worth of state. A connection
that has not sent a whole request head within ``header_timeout`` of opening (or of its
previous response) is closed, which ends slowloris-style half-open connections; idle
keep-alive connections are closed after 5 s, and so is one whose request is still
unanswered a minute after that. At most ``max_connections`` are open: one
more evicts the oldest connection still waiting for its request, or is closed at once
when all of them are busy with one, so a flood of half-open connections cannot keep a
scraper out. The event loop's thread keeps to a share of one core (10 %), so clients
asking as fast as they can slow themselves, not consumption. Optional TLS and basic auth
come from a :class:`WebConfig`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry
from uvicorn.protocols.http.h11_impl import H11Protocol

from consumers.basic_auth import BasicAuth
from consumers.exceptions import ConsumersError
from consumers.http_app import ApiSource, HttpApp
from consumers.web_config import WebConfig
from monitor.config import HttpSettings

__all__ = ["ApiSource", "HttpServer", "http_server"]

log = logging.getLogger(__name__)

#: idle keep-alive connections are closed after this many seconds
KEEP_ALIVE_TIMEOUT = 5.0
# connections waiting to be accepted; asyncio also accepts up to this many at once before
# the connection limit sees them, so it bounds the file descriptors a flood can take
_BACKLOG = 128


class _Connections:
    """The open connections of one server, oldest first, and the limit on them."""

    def __init__(self, limit: int, header_timeout: float, response_timeout: float) -> None:
        self.limit = limit
        self.header_timeout = header_timeout
        self.response_timeout = response_timeout
        self.open: OrderedDict[_Protocol, None] = OrderedDict()
        self.evicted = 0  #: connections closed to make room for new ones
        self.refused = 0  #: new connections closed because every open one was busy
        self.timed_out = 0  #: connections closed for not sending a request head in time
        self.too_slow = 0  #: connections closed for not taking their response in time

    def admit(self, new: _Protocol) -> bool:
        """Make room for ``new``; False when there is none (every connection is busy)."""
        if len(self.open) >= self.limit:
            idle = next((c for c in self.open if c.waiting()), None)
            if idle is None:
                self.refused += 1
                return False
            self.evicted += 1
            idle.drop()
        self.open[new] = None
        return True


class _CpuBudget:
    """Keeps the event loop's thread within ``share`` of one core, by sleeping (which
    releases the interpreter to the consumer) whenever it used more over the last tick.

    The consumer and the HTTP server share one interpreter lock: without a bound, clients
    asking as fast as they can would take up to half of it, whatever they ask for.
    """

    def __init__(self, share: float, tick: float = 0.1, longest_sleep: float = 1.0) -> None:
        self.share, self.tick, self.longest_sleep = share, tick, longest_sleep
        self.slept = 0.0  #: seconds the loop slept to keep within its share
        self._cpu = self._wall = 0.0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._cpu, self._wall = time.thread_time(), time.monotonic()
        loop.call_later(self.tick, self._check, loop)

    def _check(self, loop: asyncio.AbstractEventLoop) -> None:
        used = time.thread_time() - self._cpu
        excess = used / self.share - (time.monotonic() - self._wall)
        if excess > 0:
            pause = min(excess, self.longest_sleep)
            time.sleep(pause)
            self.slept += pause
        self.start(loop)


def _protocol(connections: _Connections) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol with the header timeout and the connection limit."""

    class Protocol(_Protocol):
        pass

    Protocol.connections_ = connections
    return Protocol


class _Protocol(H11Protocol):
    connections_: _Connections
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.connections_.admit(self):
            transport.abort()
            return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections_.open.pop(self, None)
        self._disarm()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm()

    def waiting(self) -> bool:
        """Whether no request is in progress: the connection is waiting for a head."""
        return self.cycle is None or self.cycle.response_complete

    def drop(self) -> None:
        self.connections_.open.pop(self, None)
        self._disarm()
        self.transport.abort()

    def _arm(self) -> None:
        self._disarm()
        self._header_timer = self.loop.call_later(
            self.connections_.header_timeout, self._header_timeout
        )

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        if self.waiting():
            self.connections_.timed_out += 1
            self.drop()
        else:  # a request in progress: its response must be taken within response_timeout
            self._header_timer = self.loop.call_later(
                self.connections_.response_timeout, self._response_timeout
            )

    def _response_timeout(self) -> None:
        self._header_timer = None
        if not self.waiting() and not self.transport.is_closing():
            self.connections_.too_slow += 1
            self.drop()


class HttpServer:
    """The HTTP endpoints on ``host:port`` (0: a free port, see :attr:`port`), served by
    uvicorn on its own daemon thread; the port is bound when constructed.

    ``cpu_share`` bounds the event loop's thread to that share of one core (0.1: 10 %), so
    that no amount of HTTP traffic takes more than that from consumption. A request still
    in progress ``header_timeout`` after its connection opened (or after its previous
    response) has ``response_timeout`` more to be answered, or its connection is closed,
    so that hung requests cannot hold every connection the limit allows. (A response is
    handed to the connection whole: a client that does not read it holds its copy until
    the header timeout closes the connection.)
    """

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        api: ApiSource,
        *,
        web_config: WebConfig | None = None,
        metrics_max_age: float = 1.0,
        max_connections: int = 256,
        header_timeout: float = 10.0,
        response_timeout: float = 60.0,
        cpu_share: float = 0.1,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.create_server((host, port), family=family, backlog=_BACKLOG)
        self._work = ThreadPoolExecutor(2, thread_name_prefix="driftline-http-work")
        users = web_config.users if web_config is not None else {}
        self._auth_work = ThreadPoolExecutor(1, thread_name_prefix="driftline-http-auth")
        self.app = HttpApp(
            registry,
            api,
            metrics_max_age=metrics_max_age,
            work=self._work,
            auth=BasicAuth(users) if users else None,
            auth_work=self._auth_work,
        )
        self.connections = _Connections(max_connections, header_timeout, response_timeout)
        self.cpu = _CpuBudget(cpu_share)
        tls = web_config.tls if web_config is not None else None
        self.tls = tls is not None
        self._server = uvicorn.Server(self._config(tls))
        self._thread = threading.Thread(target=self._serve, name="driftline-http", daemon=True)
        self._failure: BaseException | None = None

    def _config(self, tls: ssl.SSLContext | None) -> uvicorn.Config:
        extra: dict[str, Any] = {}
        if tls is not None:
            extra["ssl_context_factory"] = lambda config, default: tls
        return uvicorn.Config(
            self.app,
            http=_protocol(self.connections),
            ws="none",
            lifespan="off",
            loop="asyncio",
            log_config=None,
            log_level="warning",
            access_log=False,
            server_header=False,
            timeout_keep_alive=int(KEEP_ALIVE_TIMEOUT),
            timeout_graceful_shutdown=5,
            backlog=_BACKLOG,
            **extra,
        )

    @property
    def port(self) -> int:
        return int(self._socket.getsockname()[1])

    async def _main(self) -> None:
        self.cpu.start(asyncio.get_running_loop())
        await self._server.serve(sockets=[self._socket])

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start() or logged
            self._failure = exc
            log.exception("the HTTP server stopped")

    def start(self, timeout: float = 10.0) -> None:
        """Start serving; returns once the server accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            raise ConsumersError(f"the HTTP server did not start: {self._failure!r}")

    def stop(self) -> None:
        """Stop serving and close the port (waiting up to 5 s for requests in progress)."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(10)
        self._socket.close()
        self._work.shutdown(wait=False, cancel_futures=True)
        self._auth_work.shutdown(wait=False, cancel_futures=True)


def http_server(
    settings: HttpSettings,
    web_config: WebConfig | None,
    registry: CollectorRegistry,
    api: ApiSource,
) -> HttpServer:
    """The server the ``http`` settings describe (``web_config``: what their web
    configuration file says, see :func:`consumers.web_config.web_config_for`)."""
    return HttpServer(
        settings.host,
        settings.port,
        registry,
        api,
        web_config=web_config,
        metrics_max_age=settings.metrics_max_age,
        max_connections=settings.max_connections,
        header_timeout=settings.header_timeout,
    )
