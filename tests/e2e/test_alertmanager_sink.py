"""driftline's own rule pushed to a real Alertmanager's /api/v2/alerts."""

from __future__ import annotations

import threading
import time

import msgspec
import numpy as np
import pytest
from kafka import KafkaProducer
from test_prometheus import _ALERTMANAGER, start_alertmanager  # same directory

from consumers.loop import ConsumerLoop
from consumers.service import Service
from monitor.config import DriftlineConfig

pytestmark = pytest.mark.e2e


def test_driftline_alert_reaches_alertmanager_with_its_labels(
    tmp_path, kafka_bootstrap, make_topic, make_group, consumer_config
):
    if _ALERTMANAGER is None:
        pytest.skip("alertmanager not installed: apt-get install prometheus-alertmanager")
    alertmanager = start_alertmanager(tmp_path / "alertmanager")
    assert alertmanager is not None
    rng = np.random.default_rng(8)
    ref = tmp_path / "ref.csv"
    ref.write_text("x,y\n" + "\n".join(f"{a},{b}" for a, b in rng.normal(size=(2000, 2))) + "\n")
    topic = make_topic()
    config = DriftlineConfig.model_validate(
        {
            "kafka": {
                "bootstrap_servers": kafka_bootstrap,
                "group_id": make_group(),
                "predictions_topic": topic,
                "dead_letter_topic": make_topic(),
                "consumer": consumer_config(),
                "poll_timeout_ms": 200,
            },
            "windows": {"pane": "10s", "size": "60s", "allowed_lateness": "1s"},
            "models": [{"name": "fraud", "reference": {"path": str(ref)}}],
            "alerts": {
                "rules": [
                    {
                        "alert": "DriftlineOwnFeatureDrift",
                        "metric": "driftline_feature_drifted",
                        "match": {"model": "fraud"},
                        "threshold": 1,
                        "severity": "critical",
                        "labels": {"team": "ml-platform"},
                        "annotations": {"summary": "{{ feature }} drifted on {{ model }}"},
                    }
                ],
                "sinks": [
                    {
                        "name": "am",
                        "type": "alertmanager",
                        "url": f"http://127.0.0.1:{alertmanager.port}",
                    }
                ],
            },
        }
    )
    t0 = float(int(time.time()) // 10 * 10 - 200)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=10)
    for i in range(3000):
        features = {"x": float(rng.normal()), "y": float(rng.normal(3.0))}
        event = {
            "event_id": f"e{i}",
            "model": "fraud",
            "timestamp": t0 + i * 0.05,
            "features": features,
        }
        producer.send(topic, msgspec.json.encode(event))
    producer.flush()
    producer.close()
    service = Service(config)
    service.enable_alerting(tmp_path / "alerts", time.time())
    stop = threading.Event()
    thread = threading.Thread(
        target=ConsumerLoop(service, config.kafka).run, args=(stop,), daemon=True
    )
    thread.start()
    try:
        deadline, alerts = time.time() + 60, []
        while time.time() < deadline:
            alerts = [
                a
                for a in alertmanager.get("/api/v2/alerts")
                if a["labels"].get("alertname") == "DriftlineOwnFeatureDrift"
            ]
            if alerts:
                break
            time.sleep(0.5)
        assert len(alerts) == 1, alerts
        labels = alerts[0]["labels"]
        assert labels["model"] == "fraud"
        assert labels["feature"] == "y"
        assert labels["severity"] == "critical"
        assert labels["team"] == "ml-platform"
        assert alerts[0]["annotations"]["summary"] == "y drifted on fraud"
        assert alerts[0]["status"]["state"] == "active"
    finally:
        stop.set()
        thread.join(15)
        service.alerting.close()
        alertmanager.stop()
