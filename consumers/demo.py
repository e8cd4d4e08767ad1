"""``driftline demo``: embedded broker, the service, and a serving app whose traffic drifts.

The simulated app serves a fraud model with four features and sends each prediction's
ground truth a few seconds later. After 40% of the run, two features drift: ``amount``
concentrates near the model's decision boundary and ``country`` moves from FR to US. The
model's scores lose their confidence, so both the realized accuracy (from the delayed
labels) and the estimated one (from the scores alone) fall. The demo shows the live
per-feature drift and ends with a summary that checks the flagged features are exactly
the drifted ones and that both accuracies fell (exit code 1 otherwise).
"""

from __future__ import annotations

import io
import json
import math
import signal
import sys
import tempfile
import threading
import time
from collections import deque
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
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
    country_p = [0.1, 0.2, 0.5, 0.1, 0.1] if drifted else [0.45, 0.25, 0.1, 0.1, 0.1]
    country = rng.choice(_COUNTRIES, n, p=country_p)
    us = country == "US"
    # after the drift, amounts sit where the model hesitates (its logit is near 0)
    amount = rng.lognormal(3.13 - 0.27 * us, 0.1, n) if drifted else rng.lognormal(3.0, 0.8, n)
    age = rng.normal(40.0, 12.0, n).round()
    device = rng.choice(_DEVICES, n, p=[0.4, 0.4, 0.2])
    logit = 3.0 * (np.log(amount) - 3.0) - 0.4 + 0.8 * us
    score = 1.0 / (1.0 + np.exp(-logit))
    # the model is calibrated: the truth is drawn from its score
    truth = np.where(rng.random(n) < score, "fraud", "ok")
    return {
        "amount": amount,
        "age": age,
        "country": country,
        "device": device,
        "prediction": score,
        "truth": truth,
    }


class Receiver:
    """A local HTTP endpoint standing in for the on-call webhook and the CI that retrains."""

    def __init__(self) -> None:
        self.got: list[tuple[str, dict[str, str], bytes]] = []
        got = self.got

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                got.append((self.path, dict(self.headers.items()), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


def demo_config(
    reference: Path, bootstrap: str, window: float, http_port: int, receiver: str
) -> DriftlineConfig:
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
            "alerts": {
                "rules": [
                    {
                        "alert": "FeatureDrift",
                        "metric": "driftline_feature_drifted",
                        "match": {"model": MODEL},
                        "op": ">=",
                        "threshold": 1,
                        "keep_firing_for": "30s",
                        "annotations": {"summary": "{{ feature }} drifted on {{ model }}"},
                    }
                ],
                "sinks": [{"name": "on-call", "type": "webhook", "url": f"{receiver}/alerts"}],
            },
            "retraining": [
                {
                    "model": MODEL,
                    "on_alerts": ["FeatureDrift"],
                    "cooldown": "1h",
                    "max_per_day": 2,
                    "target": {"type": "http", "url": f"{receiver}/retrain"},
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
    keep_running: bool = False,
) -> int:
    if threading.current_thread() is threading.main_thread():
        # `kill` stops the demo as Ctrl-C does: the embedded broker is stopped with it
        signal.signal(signal.SIGTERM, _interrupt)
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
        ref = simulate(rng, 20_000, drifted=False)
        ref["label"] = ref.pop("truth")  # scores and labels: the estimate is calibrated
        _write_csv(reference, ref)
        receiver = Receiver()
        stack.callback(receiver.close)
        config = demo_config(reference, bootstrap_servers, window, http_port, receiver.url)
        k = config.kafka
        ensure_topics(
            bootstrap_servers, [k.predictions_topic, k.ground_truth_topic, k.dead_letter_topic]
        )
        service = Service(config)
        service.enable_alerting(workdir, time.time())
        http = HttpServer(config.http.host, config.http.port, service.registry, service)
        http.start()
        stack.callback(http.stop)
        base = f"http://127.0.0.1:{http.port}"
        print(
            f"driftline serving: web view {base}/ , metrics {base}/metrics, "
            f"API {base}/api/v1/models/fraud "
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
            PredictionLogger(
                bootstrap_servers,
                predictions_topic=k.predictions_topic,
                ground_truth_topic=k.ground_truth_topic,
            )
        )
        sent, before = _serve(logger, service, rng, duration, drift_at, rate, out)
        logger.flush(timeout=10)
        _drain(service, sent, timeout=15)
        final = service.evaluation(MODEL)
        code = _summary(before, final, sent, service, out)
        assert service.alerting is not None
        service.alerting.dispatcher.wait_idle(10)
        code = code if _received(receiver, out) else 1
        if keep_running:
            _keep_running(base, logger, service, rng, rate, out)
        service.alerting.close()
        return code
    return 1  # pragma: no cover - ExitStack does not swallow exceptions


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _keep_running(
    base: str,
    logger: PredictionLogger,
    service: Service,
    rng: np.random.Generator,
    rate: float,
    out: TextIO,
) -> None:
    """Keep the drifted traffic and the service going until Ctrl-C, for exploring."""
    print(
        f"\nstill running (drifted traffic continues): open {base}/ in a browser; Ctrl-C stops",
        file=out,
        flush=True,
    )
    try:
        _serve(logger, service, rng, math.inf, 0.0, rate, io.StringIO())
    except KeyboardInterrupt:
        print("stopping", file=out)


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
) -> tuple[int, ModelEvaluation | None]:
    """Send predictions at ``rate`` per second for ``duration`` seconds, and each one's
    ground truth 2-5 s later; show live drift. Returns the count and the last evaluation
    before the drift."""
    start = time.time()
    sent, tick, next_view = 0, 0.1, start + 2.0
    labels: deque[tuple[float, str, str]] = deque()
    before = None
    while (now := time.time()) < start + duration:
        due = int((now - start) * rate) - sent
        if due > 0:
            rows = simulate(rng, due, drifted=now - start >= drift_at)
            delays = rng.uniform(2.0, 5.0, due)
            for i in range(due):
                event_id = logger.log_prediction(
                    MODEL,
                    {f: _py(rows[f][i]) for f in FEATURES},
                    float(rows["prediction"][i]),
                    model_version="2026-11-01",
                    timestamp=now,
                    latency_ms=float(rng.gamma(2.0, 2.0)),
                )
                labels.append((now + float(delays[i]), event_id, str(rows["truth"][i])))
            sent += due
        while labels and (labels[0][0] <= now or now - start + tick >= duration):
            at, event_id, truth = labels.popleft()
            logger.log_ground_truth(event_id, MODEL, truth, timestamp=at)
        if now >= next_view:
            ev = service.evaluation(MODEL)
            if now - start < drift_at:
                before = ev
            _view(ev, now - start, drift_at, out)
            next_view += 3.0
        time.sleep(tick)
    for at, event_id, truth in labels:  # the labels still on their way
        logger.log_ground_truth(event_id, MODEL, truth, timestamp=at)
    return sent, before


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
    acc = _accuracies(ev)
    print(
        f"[{elapsed:5.1f}s {phase}] window={ev.window_events:5d}  "
        + "  ".join(cells)
        + f"  accuracy realized={acc[0]} estimated={acc[1]}",
        file=out,
    )


def _received(receiver: Receiver, out: TextIO) -> bool:
    """Print what the local receiver got; True when it got an alert and a retraining request."""
    print(f"the local receiver ({receiver.url}) got {len(receiver.got)} request(s):", file=out)
    kinds = set()
    for path, headers, body in receiver.got:
        data = json.loads(body)
        if path == "/alerts":
            kinds.add("alert")
            names = ", ".join(
                f"{a['labels'].get('alertname')}({a['labels'].get('feature')}) {a['status']}"
                for a in data["alerts"]
            )
            print(f"  POST /alerts   id={headers.get('webhook-id')}  {names}", file=out)
        else:
            kinds.add("retraining")
            print(
                f"  POST {path}  id={headers.get('webhook-id')}  {data.get('type')} "
                f"model={data.get('model')} reason={data.get('reason')!r}",
                file=out,
            )
    return kinds == {"alert", "retraining"}


def _accuracies(ev: ModelEvaluation | None) -> tuple[str, str]:
    if ev is None:
        return ("n/a", "n/a")
    realized, estimated = ev.performance.get("accuracy"), ev.estimated.get("accuracy")
    return (
        "n/a" if realized is None else f"{realized:.3f}",
        "n/a" if estimated is None else f"{estimated:.3f}",
    )


def _summary(
    before: ModelEvaluation | None,
    ev: ModelEvaluation | None,
    sent: int,
    service: Service,
    out: TextIO,
) -> int:
    counters = service.snapshot().counters[MODEL]
    print("\n== driftline demo summary ==", file=out)
    print(
        f"predictions sent: {sent}, consumed: {counters.predictions}; "
        f"ground truths consumed: {counters.ground_truth}",
        file=out,
    )
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
    drift_ok = flagged == DRIFTED and counters.predictions == sent
    print(
        f"flagged: {sorted(flagged)}; injected drift: {sorted(DRIFTED)} -> "
        + ("OK: exactly the drifted features were flagged" if drift_ok else "MISMATCH"),
        file=out,
    )
    r0, e0 = _accuracies(before)
    r1, e1 = _accuracies(ev)
    coverage = "n/a" if ev.label_coverage is None else f"{ev.label_coverage:.0%}"
    print(
        f"accuracy before the drift: realized {r0}, estimated {e0}; "
        f"after: realized {r1}, estimated {e1} (label coverage {coverage})",
        file=out,
    )
    fell = before is not None and all(
        "accuracy" in a and "accuracy" in b and a["accuracy"] < b["accuracy"]
        for a, b in ((ev.performance, before.performance), (ev.estimated, before.estimated))
    )
    print(
        "OK: realized and estimated accuracy both fell"
        if fell
        else "MISMATCH: accuracy did not fall as expected",
        file=out,
    )
    return 0 if drift_ok and fell else 1
