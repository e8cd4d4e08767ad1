"""Labels as producers send them (1, 1.0, "1", true, ...) on a real broker: the realized
metrics are scikit-learn's, and labels of no known class are counted and warned about once."""

from __future__ import annotations

import json
import logging
import threading
import time

import msgspec
import numpy as np
import pytest
from kafka import KafkaProducer
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from sklearn import metrics as skm

from consumers.loop import ConsumerLoop
from consumers.service import Service
from monitor.config import DriftlineConfig

pytestmark = pytest.mark.integration

POSITIVE = [1, 1.0, "1", True, "true", "1.0"]
NEGATIVE = [0, 0.0, "0", False, "false", "0.0"]


def test_any_spelling_of_a_0_1_label_counts_right_and_unknown_ones_are_counted(
    tmp_path, kafka_bootstrap, make_topic, make_group, consumer_config, caplog
):
    rng = np.random.default_rng(5)
    ref = tmp_path / "ref.csv"
    ref.write_text(
        "x,prediction\n"
        + "\n".join(f"{x},{p}" for x, p in zip(rng.normal(size=500), rng.random(500), strict=True))
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
                    "name": "m",
                    "positive_label": 1,  # an integer in the YAML is accepted
                    "reference": {"path": str(ref)},
                }
            ],
        }
    )
    n, n_unknown = 1500, 9
    t0 = float(int(time.time()) // 10 * 10 - 300)
    times = t0 + np.arange(n) * 0.1
    scores = rng.random(n)
    truth = (rng.random(n) < scores).astype(int)
    spelled = [
        (POSITIVE if t else NEGATIVE)[int(rng.integers(len(POSITIVE)))] for t in truth.tolist()
    ]
    unknown = set(rng.choice(n, n_unknown, replace=False).tolist())
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=10)
    for i in range(n):
        event = {
            "event_id": f"e{i}",
            "model": "m",
            "timestamp": float(times[i]),
            "features": {"x": float(rng.normal())},
            "prediction": float(scores[i]),
        }
        producer.send(preds_topic, value=msgspec.json.encode(event))
    for i in range(n):
        label = "yes" if i in unknown else spelled[i]
        gt = {"event_id": f"e{i}", "model": "m", "label": label, "timestamp": times[i] + 1}
        producer.send(gt_topic, value=json.dumps(gt).encode())
    producer.flush()
    producer.close()

    caplog.set_level(logging.WARNING, logger="driftline.partitions")
    service = Service(config)
    stop = threading.Event()
    loop = ConsumerLoop(service, config.kafka, checkpoint_interval=1.0)
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    known = np.array([i not in unknown for i in range(n)])
    try:
        deadline, ev = time.time() + 60, None
        while time.time() < deadline:
            service.evaluate_all(time.time())
            ev = service.evaluation("m")
            c = service.snapshot().counters.get("m")
            if ev is not None and c is not None and c.ground_truth == n:
                in_window = (times >= ev.window_start) & (times < ev.window_end)
                if ev.labelled_events == int(in_window.sum()):
                    break
            time.sleep(0.3)
        text = generate_latest(service.registry).decode()
    finally:
        stop.set()
        thread.join(15)
    assert ev is not None
    in_window = (times >= ev.window_start) & (times < ev.window_end)
    assert ev.labelled_events == int(in_window.sum())
    # unknown labels are pairs too (a negative, as before), but they are counted apart
    pairs = in_window & known
    y, predicted = truth[pairs], scores[pairs] >= 0.5
    want = skm.accuracy_score(truth[in_window] * known[in_window], scores[in_window] >= 0.5)
    assert ev.performance["accuracy"] == pytest.approx(want, abs=1e-9)
    assert skm.recall_score(y, predicted) > 0  # positives were recognised in every spelling
    got = {
        s.labels["model"]: s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "driftline_labels_unknown_class_total"
    }
    assert got == {"m": n_unknown}
    warnings = [r for r in caplog.records if "matches no class" in r.getMessage()]
    assert len(warnings) == 1
    assert warnings[0].label == "yes"
