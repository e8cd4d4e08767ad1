"""Ground truth on a real broker: out of order, delayed across panes, partly missing."""

from __future__ import annotations

import json
import threading
import time
import urllib.request

import msgspec
import numpy as np
import pytest
from kafka import KafkaProducer
from sklearn import metrics as skm

from consumers.http import HttpServer
from consumers.loop import ConsumerLoop
from consumers.service import Service
from monitor.config import DriftlineConfig

pytestmark = pytest.mark.integration


def test_realized_metrics_equal_sklearn_on_exactly_the_joined_pairs(
    tmp_path, kafka_bootstrap, make_topic, make_group, consumer_config
):
    rng = np.random.default_rng(11)
    ref = tmp_path / "ref.csv"
    ref.write_text(
        "x,prediction\n"
        + "\n".join(
            f"{x},{p}" for x, p in zip(rng.normal(size=2000), rng.random(2000), strict=True)
        )
    )
    preds_topic, gt_topic = make_topic(), make_topic()
    config = DriftlineConfig.model_validate(
        {
            "kafka": {
                "bootstrap_servers": kafka_bootstrap,
                "group_id": make_group(),
                "predictions_topic": preds_topic,
                "ground_truth_topic": gt_topic,
                "dead_letter_topic": make_topic(),
                "consumer": consumer_config(),
                "poll_timeout_ms": 200,
            },
            "windows": {"pane": "10s", "size": "10m", "allowed_lateness": "5s"},
            "models": [
                {
                    "name": "fraud",
                    "task": "binary_classification",
                    "positive_label": "fraud",
                    "reference": {"path": str(ref)},
                }
            ],
        }
    )
    n = 3000
    t0 = float(int(time.time()) // 10 * 10 - 400)
    times = t0 + np.arange(n) * 0.1  # 300 s of predictions
    scores = rng.random(n)
    truth = np.where(rng.random(n) < scores, "fraud", "ok")  # a calibrated model
    labelled = rng.random(n) < 0.7  # 30% never get their ground truth
    delays = rng.uniform(0, 120, n)  # labels arrive up to two minutes (12 panes) later
    early = labelled & (rng.random(n) < 0.5)  # half of them before their prediction

    def prediction(i: int) -> bytes:
        return msgspec.json.encode(
            {
                "event_id": f"e{i}",
                "model": "fraud",
                "timestamp": float(times[i]),
                "features": {"x": float(rng.normal())},
                "prediction": float(scores[i]),
            }
        )

    def label(i: int) -> bytes:
        return json.dumps(
            {
                "event_id": f"e{i}",
                "model": "fraud",
                "label": str(truth[i]),
                "timestamp": times[i] + delays[i],
            }
        ).encode()

    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=10)
    for i in np.flatnonzero(early):
        producer.send(gt_topic, key=f"e{i}".encode(), value=label(i))
    for i in range(n):
        producer.send(preds_topic, key=f"e{i}".encode(), value=prediction(i))
    late_labels = np.flatnonzero(labelled & ~early)
    for i in late_labels[np.argsort(delays[late_labels])]:
        producer.send(gt_topic, key=f"e{i}".encode(), value=label(i))
    duplicates = np.flatnonzero(labelled)[:25]
    for i in duplicates:  # redelivered labels are counted, not joined twice
        producer.send(gt_topic, key=f"e{i}".encode(), value=label(i))
    for k in range(40):  # labels for predictions that never happened wait, then expire
        producer.send(
            gt_topic,
            value=json.dumps({"event_id": f"ghost{k}", "model": "fraud", "label": "ok"}).encode(),
        )
    producer.flush()
    producer.close()

    service = Service(config)
    http = HttpServer("127.0.0.1", 0, service.registry, service)
    http.start()
    stop = threading.Event()
    # late labels change closed panes; they travel to stage 2 with every heartbeat
    loop = ConsumerLoop(service, config.kafka, checkpoint_interval=1.0)
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    n_labels = int(labelled.sum()) + len(duplicates) + 40
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            c = service.snapshot().counters["fraud"]
            if c.predictions == n and c.ground_truth == n_labels:
                break
            time.sleep(0.3)
        c = service.snapshot().counters["fraud"]
        assert (c.predictions, c.ground_truth) == (n, n_labels)

        def converged() -> dict | None:
            # stage 2 sees the panes (and the labels joined to closed ones) through the
            # panes topic, a little after stage 1 counted them
            with urllib.request.urlopen(
                f"http://127.0.0.1:{http.port}/api/v1/models/fraud", timeout=5
            ) as r:
                api = json.loads(r.read())
            ev = api["evaluation"]
            if ev is None:
                return None
            w = ev["window"]
            in_window = (times >= w["start"]) & (times < w["end"])
            done = ev["performance"]["labelled_events"] == int((in_window & labelled).sum())
            return api if done else None

        deadline = time.time() + 30
        while (api := converged()) is None and time.time() < deadline:
            time.sleep(0.3)
        assert api is not None, "the evaluation never reflected every joined label"
        unjoined = service.snapshot().counters["fraud"].unjoined
        (join,) = service.inputs.joins("fraud")
        pending = (join.pending_predictions, join.pending_labels, join.joined_total)
    finally:
        stop.set()
        thread.join(15)
        http.stop()

    ev = api["evaluation"]
    start, end = ev["window"]["start"], ev["window"]["end"]
    in_window = (times >= start) & (times < end)
    pairs = in_window & labelled
    y = truth[pairs] == "fraud"
    s = scores[pairs]
    realized = ev["performance"]["realized"]
    assert ev["performance"]["labelled_events"] == int(pairs.sum())
    assert ev["performance"]["label_coverage"] == pytest.approx(pairs.sum() / in_window.sum())
    assert ev["window"]["events"] == int(in_window.sum())
    predicted = s >= 0.5
    assert realized["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted), abs=1e-9)
    assert realized["precision"] == pytest.approx(skm.precision_score(y, predicted), abs=1e-9)
    assert realized["recall"] == pytest.approx(skm.recall_score(y, predicted), abs=1e-9)
    assert realized["f1"] == pytest.approx(skm.f1_score(y, predicted), abs=1e-9)
    assert realized["log_loss"] == pytest.approx(skm.log_loss(y, s, labels=[False, True]), abs=1e-9)
    assert realized["brier"] == pytest.approx(skm.brier_score_loss(y, s), abs=1e-9)
    assert realized["roc_auc"] == pytest.approx(skm.roc_auc_score(y, s), abs=0.01)
    # confidence-based estimate of a calibrated model tracks the realized value
    estimated = ev["performance"]["estimated"]
    assert estimated["accuracy"] == pytest.approx(realized["accuracy"], abs=0.05)
    # what never joined is accounted for
    assert unjoined.get("duplicate_label") == len(duplicates), unjoined
    assert pending == (int((~labelled).sum()), 40, int(labelled.sum()))


def test_expired_and_evicted_counts_equal_what_was_left_unjoined(
    tmp_path, kafka_bootstrap, make_topic, make_group, consumer_config
):
    rng = np.random.default_rng(3)
    ref = tmp_path / "ref.csv"
    ref.write_text("x\n" + "\n".join(str(x) for x in rng.normal(size=500)) + "\n")
    preds_topic, gt_topic = make_topic(), make_topic()
    config = DriftlineConfig.model_validate(
        {
            "kafka": {
                "bootstrap_servers": kafka_bootstrap,
                "group_id": make_group(),
                "predictions_topic": preds_topic,
                "ground_truth_topic": gt_topic,
                "dead_letter_topic": make_topic(),
                "consumer": consumer_config(),
                "poll_timeout_ms": 200,
            },
            "windows": {"pane": "10s", "size": "10m", "allowed_lateness": "5s"},
            "models": [
                {
                    "name": "tiny",
                    "positive_label": "1",
                    "reference": {"path": str(ref)},
                    "labels": {"ttl": "10m", "capacity": 100},
                }
            ],
        }
    )
    now = time.time()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)

    def send(topic: str, event: dict) -> None:
        producer.send(topic, value=json.dumps(event).encode())

    for i in range(500):  # more pending predictions than the capacity
        event = {"event_id": f"p{i}", "model": "tiny", "timestamp": now - 300 + i * 0.1}
        send(preds_topic, {**event, "features": {"x": 0.1}, "prediction": 0.9})
    for i in range(30):  # already older than the TTL when they arrive
        event = {"event_id": f"old{i}", "model": "tiny", "timestamp": now - 1200}
        send(preds_topic, {**event, "features": {"x": 0.1}, "prediction": 0.9})
    for i in range(20):  # labels of predictions that were evicted
        send(gt_topic, {"event_id": f"p{i}", "model": "tiny", "label": "1", "timestamp": now})
    for i in range(480, 500):  # labels of predictions still pending: they join
        send(gt_topic, {"event_id": f"p{i}", "model": "tiny", "label": "0", "timestamp": now})
    producer.flush()
    producer.close()

    service = Service(config)
    stop = threading.Event()
    thread = threading.Thread(
        target=ConsumerLoop(service, config.kafka).run, args=(stop,), daemon=True
    )
    thread.start()
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            c = service.snapshot().counters["tiny"]
            if c.predictions == 530 and c.ground_truth == 40:
                break
            time.sleep(0.3)
        c = service.snapshot().counters["tiny"]
        (join,) = service.inputs.joins("tiny")
        assert (c.predictions, c.ground_truth) == (530, 40)
        # Arrival order across the two topics is not fixed: labels of p0..p19 join when
        # they arrive before their predictions are evicted, and wait otherwise.
        assert c.unjoined["prediction_expired"] == 30
        assert 80 <= join.pending_predictions <= 100  # bounded by the capacity
        assert 20 <= join.joined_total <= 40
        evicted = c.unjoined["prediction_evicted"]
        assert join.joined_total + join.pending_predictions + evicted == 500
        assert join.joined_total + join.pending_labels == 40
    finally:
        stop.set()
        thread.join(15)
