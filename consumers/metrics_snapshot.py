"""/metrics rendered at most once per ``max_age``, however many scrapers ask.

Rendering the registry takes the service's locks and the interpreter for as long as it
runs, which is time the consumer loop does not get; twenty scrapers each rendering their
own copy halved consumption. Here a scrape is answered from the last rendering while it is
younger than ``max_age``; otherwise one rendering starts (in ``executor``, so the event
loop keeps serving) and every scrape arriving meanwhile waits for that same one. Each
format (Prometheus text, OpenMetrics) has its own rendering.

Used from one event loop only: the bookkeeping needs no lock.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

__all__ = ["MetricsSnapshot"]

# formats kept: the content type carries the version the scraper asked for, so a client
# could otherwise make the cache grow with made-up versions
_MAX_FORMATS = 8


@dataclass(frozen=True)
class _Rendering:
    body: bytes
    started: float  # clock() when the rendering began: the age of the data in it


class MetricsSnapshot:
    """Cached renderings of ``registry``, one per format."""

    def __init__(
        self,
        registry: CollectorRegistry,
        max_age: float,
        executor: Executor,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._max_age = max_age
        self._executor = executor
        self._clock = clock
        self._done: OrderedDict[str, _Rendering] = OrderedDict()
        self._running: dict[str, asyncio.Future[bytes]] = {}
        self.renders = 0  #: renderings made so far (for tests and benchmarks)

    async def get(self, accept: str) -> tuple[bytes, str]:
        """The body and content type answering a scrape with this ``Accept`` header."""
        encoder, content_type = choose_encoder(accept)
        done = self._done.get(content_type)
        if done is not None and self._clock() - done.started < self._max_age:
            return done.body, content_type
        running = self._running.get(content_type)
        if running is None:
            running = asyncio.ensure_future(self._render(encoder, content_type))
            self._running[content_type] = running
            running.add_done_callback(lambda _: self._running.pop(content_type, None))
        # shielded: a scraper that hangs up must not cancel the others' rendering
        return await asyncio.shield(running), content_type

    async def _render(self, encoder: Callable[[CollectorRegistry], bytes], key: str) -> bytes:
        started = self._clock()
        loop = asyncio.get_running_loop()
        body = await loop.run_in_executor(self._executor, encoder, self._registry)
        self.renders += 1
        self._done[key] = _Rendering(body, started)
        self._done.move_to_end(key)
        while len(self._done) > _MAX_FORMATS:
            self._done.popitem(last=False)
        return body
