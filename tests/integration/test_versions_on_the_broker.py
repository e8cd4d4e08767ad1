"""Model versions on a real broker: a champion, a shadow challenger answering the same
requests and a canary, through two partitions, one ground truth per request."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Any

import msgspec
import numpy as np
import pytest
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from sklearn import metrics as skm

from consumers.http import HttpServer
from consumers.loop import ConsumerLoop
from consumers.service import Service
from monitor.config import DriftlineConfig

pytestmark = pytest.mark.integration

REFERENCE_EVENTS = 300


def _get(port: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.read() if path == "/metrics" else json.loads(r.read())


def _summary(ev: Any, times: Any, labelled: Any, canary: Any) -> Any:
    """What the last evaluation said, for a failure's message."""
    if ev is None:
        return None
    w = ev["window"]
    inside = (times >= w["start"]) & (times < w["end"])
    return {
        "window": w,
        "want_labelled": int((inside & labelled & ~canary).sum()),
        "want_events": int((inside & ~canary).sum()),
        "versions": {
            v: (e["window"], e["performance"]["labelled_events"])
            for v, e in ev.get("versions", {}).items()
        },
    }


def test_champion_shadow_challenger_and_canary_side_by_side(
    kafka_bootstrap, make_topic, make_group, consumer_config
):
    rng = np.random.default_rng(21)
    preds, gt = make_topic(partitions=2), make_topic(partitions=2)
    config = DriftlineConfig.model_validate(
        {
            "kafka": {
                "bootstrap_servers": kafka_bootstrap,
                "group_id": make_group(),
                "predictions_topic": preds,
                "ground_truth_topic": gt,
                "dead_letter_topic": make_topic(),
                "consumer": consumer_config(),
                "poll_timeout_ms": 200,
            },
            "windows": {"pane": "10s", "size": "10m", "allowed_lateness": "5s"},
            "models": [
                {
                    "name": "fraud",
                    "task": "binary_classification",
                    "reference": {"from_stream": {"events": REFERENCE_EVENTS}},
                    "features": {"x": {"type": "numerical"}},
                }
            ],
        }
    )
    t0 = float(int(time.time()) // 10 * 10 - 2000)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=10)

    def send(topic: str, event: dict[str, Any]) -> None:
        key = str(event["event_id"]).encode()
        producer.send(topic, key=key, value=msgspec.json.encode(event))

    def prediction(eid: str, t: float, x: float, p: float, version: str) -> dict[str, Any]:
        return {
            "event_id": eid,
            "model": "fraud",
            "model_version": version,
            "timestamp": float(t),
            "features": {"x": float(x)},
            "prediction": float(p),
        }

    # v1 alone first: its first events are the model's reference
    for i in range(REFERENCE_EVENTS):
        send(preds, prediction(f"w{i}", t0 + i * 0.5, float(rng.normal()), 0.5, "v1"))
    # then every request answered by the champion v1 and, in shadow, by v2; a canary v3
    # takes a fifth of the requests with inputs moved by two standard deviations
    n = 4000
    times = t0 + 200 + np.arange(n) * 0.4
    canary = rng.random(n) < 0.2
    x = np.where(canary, rng.normal(2.0, 1.0, n), rng.normal(size=n))
    truth = (rng.random(n) < 1 / (1 + np.exp(-2 * x))).astype(int)
    champion = 1 / (1 + np.exp(-(x + rng.normal(0, 1.5, n))))
    challenger = 1 / (1 + np.exp(-(2 * x + rng.normal(0, 0.5, n))))
    labelled = rng.random(n) < 0.7
    for i in range(n):
        if canary[i]:
            send(preds, prediction(f"r{i}", times[i], x[i], champion[i], "v3"))
        else:
            send(preds, prediction(f"r{i}", times[i], x[i], champion[i], "v1"))
            send(preds, prediction(f"r{i}", times[i], x[i], challenger[i], "v2"))
    # one ground truth per request, with the label spelt as serving apps spell it
    spell = {0: [0, "0", False, 0.0], 1: [1, "1", True, 1.0]}
    for i in np.flatnonzero(labelled):
        label = spell[int(truth[i])][i % 4]
        send(gt, {"event_id": f"r{i}", "model": "fraud", "label": label})
    producer.flush()
    producer.close()

    service = Service(config)
    http = HttpServer("127.0.0.1", 0, service.registry, service)
    http.start()
    stop = threading.Event()
    loop = ConsumerLoop(service, config.kafka, checkpoint_interval=1.0)
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()

    seen: list[Any] = []

    def converged() -> dict[str, Any] | None:
        data = _get(http.port, "/api/v1/models/fraud")
        ev = data["evaluation"]
        seen[:] = [_summary(ev, times, labelled, canary)]
        if ev is None or set(ev.get("versions", {})) != {"v1", "v2", "v3"}:
            return None
        w = ev["window"]
        inside = (times >= w["start"]) & (times < w["end"])
        for v, member in (("v1", ~canary), ("v2", ~canary)):
            want = int((inside & labelled & member).sum())
            if ev["versions"][v]["performance"]["labelled_events"] != want:
                return None
        return data

    try:
        deadline = time.time() + 120
        while (data := converged()) is None and time.time() < deadline:
            time.sleep(0.3)
        assert data is not None, f"the versions' evaluations never reflected every label: {seen}"
        text = _get(http.port, "/metrics").decode()
    finally:
        stop.set()
        thread.join(15)
        http.stop()
    assert not thread.is_alive()

    ev = data["evaluation"]
    w = ev["window"]
    inside = (times >= w["start"]) & (times < w["end"])
    assert w["start"] > times[0] + 500  # the versions' own references are outside it
    for v, scores in (("v1", champion), ("v2", challenger)):
        got = ev["versions"][v]
        assert got["model_version"] == v
        rows = inside & ~canary
        assert got["window"]["events"] == int(rows.sum())
        pairs = rows & labelled
        y, p = truth[pairs], scores[pairs]
        realized = got["performance"]["realized"]
        assert realized["accuracy"] == pytest.approx(skm.accuracy_score(y, p >= 0.5))
        assert realized["recall"] == pytest.approx(skm.recall_score(y, p >= 0.5))
        assert realized["log_loss"] == pytest.approx(skm.log_loss(y, p), rel=1e-6)
    # the model as served counts each request once: the champion's and the canary's
    assert ev["window"]["events"] == int(inside.sum())
    # (a shadow's prediction counts as one once the champion's is held: from the moment
    # the model has its reference)
    assert int((~canary).sum()) * 0.8 < data["shadow_predictions_total"] <= int((~canary).sum())
    # the canary did not replace the champion's reference: v1 and v2 are judged against
    # v1's and do not drift; the canary against its own; the model as served sees the move
    assert data["reference"]["model_version"] == "v1"
    assert ev["versions"]["v1"]["features"][0]["drifted"] is False
    assert ev["versions"]["v2"]["features"][0]["drifted"] is False
    assert ev["versions"]["v3"]["features"][0]["drifted"] is False
    assert ev["features"][0]["drifted"] is True
    # exported side by side with a model_version label
    perf = {
        s.labels.get("model_version"): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "driftline_model_performance" and s.labels["metric"] == "accuracy"
    }
    assert set(perf) == {None, "v1", "v2", "v3"}
    assert perf["v2"] > perf["v1"]
