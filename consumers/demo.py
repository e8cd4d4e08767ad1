"""``driftline demo``: embedded broker, the service, and a serving app whose traffic drifts.

The simulated app serves a fraud model with four features. After 40% of the run, two of
them drift (``amount`` grows 2.5x, ``country`` moves from FR to US). The demo shows the
live per-feature drift and ends with a summary that checks the flagged features are
exactly the drifted ones (exit code 1 otherwise).
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from consumers.http import HttpServer
from consumers.loop import ConsumerLoop
from consumers.producer import PredictionLogger
from consumers.service import Service
from consumers.topics import ensure_topics
from monitor.config import DriftlineConfig
from monitor.evaluation import ModelEvaluation

__all__ = ["DRIFTED", "FEATURES", "run_demo"]

MODEL = "fraud"
FEATURES = ("amount", "age", "country", "device")
DRIFTED = frozenset({"amount", "country"})
_COUNTRIES = np.array(["FR", "DE", "US", "GB", "ES"], dtype=object)
_DEVICES = np.array(["ios", "android", "web"], dtype=object)


def simulate(rng: np.random.Generator, n: int, drifted: bool) -> dict[str, Any]:
    """``n`` rows of the fraud model's inputs, before or after the drift."""
    scale = 2.5 if drifted else 1.0
    country_p = [0.1, 0.2, 0.5, 0.1, 0.1] if drifted else [0.45, 0.25, 0.1, 0.1, 0.1]
    amount = rng.lognormal(3.0, 0.8, n) * scale
    age = rng.normal(40.0, 12.0, n).round()
    country = rng.choice(_COUNTRIES, n, p=country_p)
    device = rng.choice(_DEVICES, n, p=[0.4, 0.4, 0.2])
    logit = -4.0 + 0.02 * np.log1p(amount) * 40 / 3 + (country == "US") * 0.5
    score = 1.0 / (1.0 + np.exp(-logit))
    return {"amount": amount, "age": age, "country": country, "device": device, "prediction": score}


def demo_config(reference: Path, bootstrap: str, window: float, http_port: int) -> DriftlineConfig:
    suffix = str(int(time.time() * 1000))
    return DriftlineConfig.model_validate(
        {
            "kafka": {
                "bootstrap_servers": bootstrap,
                "group_id": f"driftline-demo-{suffix}",
                # The embedded broker holds the first JoinGroup for the whole rebalance
                # timeout (max_poll_interval_ms); a short one keeps the demo snappy.
                "consumer": {
                    "max_poll_interval_ms": 3000,
                    "session_timeout_ms": 3000,
                    "heartbeat_interval_ms": 500,
                },
                "poll_timeout_ms": 200,
            },
            "http": {"host": "127.0.0.1", "port": http_port},
            "windows": {"pane": "1s", "size": f"{window:g}s", "allowed_lateness": "1s"},
            "state": {"dir": str(reference.parent / "state")},
            "models": [
                {
                    "name": MODEL,
                    "task": "binary_classification",
                    "positive_label": "fraud",
                    "reference": {"path": str(reference)},
                    "drift": {"min_events": 200},
                }
            ],
        }
    )


def run_demo(
    duration: float = 60.0,
    bootstrap_servers: str | None = None,
    http_port: int = 0,
    rate: float = 400.0,
    out: TextIO = sys.stdout,
) -> int:
    rng = np.random.default_rng(7)
    drift_at = 0.4 * duration
    window = max(2.0, float(min(15, int(0.4 * duration))))
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="driftline-demo-")))
        if bootstrap_servers is None:
            from consumers.broker import EmbeddedBroker

            broker = stack.enter_context(EmbeddedBroker())
            bootstrap_servers = broker.bootstrap_servers
            print(f"embedded broker (Tansu) on {bootstrap_servers}", file=out)
        reference = workdir / "fraud_reference.csv"
        _write_csv(reference, simulate(rng, 20_000, drifted=False))
        config = demo_config(reference, bootstrap_servers, window, http_port)
        k = config.kafka
        ensure_topics(
            bootstrap_servers, [k.predictions_topic, k.ground_truth_topic, k.dead_letter_topic]
        )
        service = Service(config)
        http = HttpServer(config.http.host, config.http.port, service.registry, service)
        http.start()
        stack.callback(http.stop)
        print(
            f"driftline serving on http://127.0.0.1:{http.port}/metrics "
            f"(window {window:g}s in 1s panes); drift starts at t={drift_at:.0f}s",
            file=out,
        )
        stop = threading.Event()
        loop = ConsumerLoop(service, config.kafka)
        consumer = threading.Thread(target=loop.run, args=(stop,), name="consumer", daemon=True)
        consumer.start()
        stack.callback(consumer.join, 10)
        stack.callback(stop.set)
        logger = stack.enter_context(
            PredictionLogger(bootstrap_servers, predictions_topic=k.predictions_topic)
        )
        sent = _serve(logger, service, rng, duration, drift_at, rate, out)
        logger.flush(timeout=10)
        _drain(service, sent, timeout=15)
        final = service.evaluation(MODEL)
        return _summary(final, sent, service, out)
    return 1  # pragma: no cover - ExitStack does not swallow exceptions


def _write_csv(path: Path, columns: dict[str, Any]) -> None:
    names = list(columns)
    n = len(columns[names[0]])
    with path.open("w", encoding="utf-8") as f:
        f.write(",".join(names) + "\n")
        rows = zip(*(columns[c].tolist() for c in names), strict=True)
        f.writelines(",".join(map(str, row)) + "\n" for row in rows)
    assert n > 0


def _serve(
    logger: PredictionLogger,
    service: Service,
    rng: np.random.Generator,
    duration: float,
    drift_at: float,
    rate: float,
    out: TextIO,
) -> int:
    """Send predictions at ``rate`` per second for ``duration`` seconds; show live drift."""
    start = time.time()
    sent, tick, next_view = 0, 0.1, start + 2.0
    while (now := time.time()) < start + duration:
        due = int((now - start) * rate) - sent
        if due > 0:
            rows = simulate(rng, due, drifted=now - start >= drift_at)
            for i in range(due):
                logger.log_prediction(
                    MODEL,
                    {f: _py(rows[f][i]) for f in FEATURES},
                    float(rows["prediction"][i]),
                    model_version="2026-11-01",
                    timestamp=now,
                    latency_ms=float(rng.gamma(2.0, 2.0)),
                )
            sent += due
        if now >= next_view:
            _view(service.evaluation(MODEL), now - start, drift_at, out)
            next_view += 3.0
        time.sleep(tick)
    return sent


def _py(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _drain(service: Service, sent: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if service.events_counted(MODEL) >= sent:
            break
        time.sleep(0.2)
    # The last panes close only when newer events arrive; evaluate what has closed.
    service.evaluate_all(time.time())


def _view(ev: ModelEvaluation | None, elapsed: float, drift_at: float, out: TextIO) -> None:
    phase = "drifting" if elapsed >= drift_at else "stable"
    if ev is None:
        print(f"[{elapsed:5.1f}s {phase}] waiting for the first window to close", file=out)
        return
    cells = []
    for f in ev.features:
        d = f.decision
        verdict = "-" if f.drifted is None else ("DRIFT" if f.drifted else "ok")
        cells.append(f"{f.name}={d.score:.3f}({f.method[:4]}) {verdict}" if d else f"{f.name}=n/a")
    print(f"[{elapsed:5.1f}s {phase}] window={ev.window_events:5d}  " + "  ".join(cells), file=out)


def _summary(ev: ModelEvaluation | None, sent: int, service: Service, out: TextIO) -> int:
    counted = service.snapshot().counters[MODEL].predictions
    print("\n== driftline demo summary ==", file=out)
    print(f"predictions sent: {sent}, consumed: {counted}", file=out)
    if ev is None:
        print("no window was evaluated", file=out)
        return 1
    for f in ev.features:
        d = f.decision
        score = f"{d.score:.3f}" if d else "n/a"
        mark = "DRIFTED" if f.drifted else "stable"
        print(
            f"  {f.name:8s} {f.method:14s} score {score:>7s} threshold {f.threshold:g}  {mark}",
            file=out,
        )
    flagged = set(ev.drifted_features)
    ok = flagged == DRIFTED and counted == sent
    print(
        f"flagged: {sorted(flagged)}; injected drift: {sorted(DRIFTED)} -> "
        + ("OK: exactly the drifted features were flagged" if ok else "MISMATCH"),
        file=out,
    )
    return 0 if ok else 1
