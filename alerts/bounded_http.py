"""One HTTP request with a total deadline and a cap on the response body read.

httpx's timeouts apply to each socket operation: a receiver that answers one byte at a
time, each within the read timeout, keeps a request going for as long as it likes. Here
connecting, sending, and reading the headers and the body share one wall-clock
``deadline``: when it passes, a timer shuts the connection's socket down, which ends a
read blocked in it. At most ``max_body`` bytes of the body are read (enough to log what
a receiver said), the connection is then closed and never reused, and the body is never
decompressed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

__all__ = ["MAX_BODY", "BoundedResponse", "DeadlineExceeded", "new_client", "send"]

#: bytes of a response body read at most
MAX_BODY = 64 * 1024


class DeadlineExceeded(httpx.TimeoutException):
    """No complete status line and headers within the request's deadline."""


@dataclass(frozen=True)
class BoundedResponse:
    """What was read of an answer: its status, its headers and, unless it is a 2xx, the
    first bytes of its body."""

    status_code: int
    headers: httpx.Headers
    body: bytes

    def snippet(self, chars: int = 200) -> str:
        """The start of the body as text, for a log line."""
        return self.body.decode("utf-8", "replace")[:chars]


def new_client() -> httpx.Client:
    """A client for :func:`send`: no redirects and no kept-alive connections, so every
    request opens its own socket (the one the deadline can shut down)."""
    return httpx.Client(follow_redirects=False, limits=httpx.Limits(max_keepalive_connections=0))


class _Watchdog:
    """Shuts down the socket of one request when its deadline passes."""

    def __init__(self, seconds: float) -> None:
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._done = False
        self.expired = False
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.finish()

    def trace(self, event: str, info: Mapping[str, Any]) -> None:
        """httpx's ``trace`` extension: learns the socket once connected (or wrapped in
        TLS, which replaces the socket object)."""
        if event.endswith((".connect_tcp.complete", ".start_tls.complete")):
            stream = info.get("return_value")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if isinstance(sock, socket.socket):
                with self._lock:
                    self._socket = sock
                    if self.expired and not self._done:
                        self._shutdown()

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if not self._done:
                self._shutdown()

    def _shutdown(self) -> None:
        if self._socket is None:
            return  # still connecting: the connect timeout is the time left, and the
            # socket is shut down as soon as it is known
        # the plain socket's shutdown, also for a TLS socket: a read blocked in it
        # returns, whichever thread it is in (OSError: closed meanwhile)
        with contextlib.suppress(OSError):
            socket.socket.shutdown(self._socket, socket.SHUT_RDWR)

    def finish(self) -> None:
        """Called before the connection is closed: the timer leaves the socket alone."""
        with self._lock:
            self._done = True
        self._timer.cancel()


def send(
    client: httpx.Client,
    method: str,
    url: str,
    *,
    content: bytes,
    headers: Mapping[str, str],
    deadline: float,
    max_body: int = MAX_BODY,
) -> BoundedResponse:
    """Send one request and read its answer within ``deadline`` seconds in all.

    Raises :class:`DeadlineExceeded` when the status line and headers did not all arrive
    in time, and httpx's errors for everything else that goes wrong before them. A body
    cut short by the deadline, by ``max_body`` or by the receiver is returned as far as it
    was read.
    """
    started = time.monotonic()
    timeout = httpx.Timeout(deadline)
    with _Watchdog(deadline) as watchdog:
        try:
            with client.stream(
                method,
                url,
                content=content,
                headers={**headers, "Accept-Encoding": "identity"},
                timeout=timeout,
                extensions={"trace": watchdog.trace},
            ) as resp:
                body = b"" if resp.is_success else _read_prefix(resp, max_body)
                watchdog.finish()  # before the with closes the connection
                return BoundedResponse(resp.status_code, resp.headers, body)
        except httpx.HTTPError as e:
            if watchdog.expired:
                elapsed = time.monotonic() - started
                raise DeadlineExceeded(
                    f"no complete answer within the {deadline:g}s deadline "
                    f"(gave up after {elapsed:.1f}s)"
                ) from e
            raise


def _read_prefix(resp: httpx.Response, limit: int) -> bytes:
    """The first ``limit`` bytes of the body as sent (never decompressed); a read that the
    deadline or the receiver ended keeps what arrived before."""
    parts: list[bytes] = []
    size = 0
    with contextlib.suppress(httpx.HTTPError):
        for chunk in resp.iter_raw():
            parts.append(chunk)
            size += len(chunk)
            if size >= limit:
                break
    return b"".join(parts)[:limit]
