"""End to end on a real broker: 20 000 events, two models, one drifted feature each."""

from __future__ import annotations

import threading
import time
import urllib.request
from pathlib import Path

import msgspec
import numpy as np
import pytest
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from consumers.http import HttpServer
from consumers.loop import ConsumerLoop
from consumers.service import Service
from monitor.config import DriftlineConfig

pytestmark = pytest.mark.integration

# recent event times (validation rejects events older than 7 days), pane-aligned
T0 = float(int(time.time()) // 100 * 100 - 1000)
MODELS = {
    # model: (numerical features, categorical features, the drifted feature)
    "fraud": (["amount", "age"], ["country"], "amount"),
    "churn": (["tenure", "usage"], ["plan"], "plan"),
}
CATS = np.array(["a", "b", "c", "d"], dtype=object)


def _columns(rng, num, cat, n, drifted=None):
    cols = {}
    for name in num:
        shift = 1.0 if name == drifted else 0.0
        cols[name] = rng.normal(shift, 1.0, n)
    for name in cat:
        p = [0.1, 0.1, 0.1, 0.7] if name == drifted else [0.4, 0.3, 0.2, 0.1]
        cols[name] = rng.choice(CATS, n, p=p)
    return cols


def _write_csv(path: Path, cols) -> None:
    names = list(cols)
    lines = [",".join(names)]
    rows = zip(*(cols[c].tolist() for c in names), strict=True)
    lines += [",".join(map(str, row)) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_drifted_features_are_flagged_and_counts_are_exact(
    tmp_path, kafka_bootstrap, make_topic, make_group, consumer_config
):
    rng = np.random.default_rng(42)
    topic = make_topic()
    dlq = make_topic()
    models = []
    for name, (num, cat, _) in MODELS.items():
        path = tmp_path / f"{name}.csv"
        _write_csv(path, _columns(rng, num, cat, 5000))
        models.append(
            {"name": name, "reference": {"path": str(path)}, "drift": {"min_events": 500}}
        )
    config = DriftlineConfig.model_validate(
        {
            "kafka": {
                "bootstrap_servers": kafka_bootstrap,
                "group_id": make_group(),
                "predictions_topic": topic,
                "dead_letter_topic": dlq,
                "consumer": consumer_config(),
                "poll_timeout_ms": 200,
            },
            "http": {"host": "127.0.0.1", "port": 0},
            "windows": {"pane": "10s", "size": "60s", "allowed_lateness": "5s"},
            "models": models,
        }
    )
    service = Service(config)
    http = HttpServer("127.0.0.1", 0, service.registry, service)
    http.start()
    stop = threading.Event()
    loop = ConsumerLoop(service, config.kafka)
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    try:
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=10)
        n_per_model = 10_000
        for name, (num, cat, drifted) in MODELS.items():
            cols = _columns(rng, num, cat, n_per_model, drifted)
            for i in range(n_per_model):
                event = {
                    "event_id": f"{name}-{i}",
                    "model": name,
                    "timestamp": T0 + i * 0.01,  # 100 s of event time
                    "features": {
                        k: cols[k][i].item() if hasattr(cols[k][i], "item") else cols[k][i]
                        for k in cols
                    },
                    "prediction": 0.5,
                }
                producer.send(
                    topic, key=event["event_id"].encode(), value=msgspec.json.encode(event)
                )
        producer.flush()
        producer.close()

        deadline = time.time() + 90
        while time.time() < deadline:
            m = scrape(http.port)
            totals = [
                m.get(("driftline_events_total", (("kind", "prediction"), ("model", name))), 0)
                for name in MODELS
            ]
            if totals == [n_per_model] * len(MODELS):
                break
            time.sleep(0.5)
        assert totals == [n_per_model] * len(MODELS)
        # the readiness endpoint agrees once partitions are assigned
        with urllib.request.urlopen(f"http://127.0.0.1:{http.port}/readyz", timeout=5) as r:
            assert r.status == 200

        # stage 2 merges the partitions' panes as they are published: wait for it to hold
        # the final window rather than reading it the moment the counters match
        deadline = time.time() + 60
        while time.time() < deadline:
            m = scrape(http.port)
            windows = [m.get(("driftline_window_events", (("model", n),))) for n in MODELS]
            if windows == [6000] * len(MODELS):
                break
            time.sleep(0.5)
        for name, (num, cat, drifted) in MODELS.items():
            for feature in num + cat:
                value = m[("driftline_feature_drifted", (("feature", feature), ("model", name)))]
                assert value == (1.0 if feature == drifted else 0.0), (name, feature)
            # 100 s of events in 10 s panes, 5 s lateness: the last closed pane ends at 90 s,
            # the 60 s window holds 6 panes of 1000 events
            assert m[("driftline_window_events", (("model", name),))] == 6000
            assert m[("driftline_drifted_features_ratio", (("model", name),))] == pytest.approx(
                1 / 3
            )
            assert m[("driftline_events_late_total", (("model", name),))] == 0
    finally:
        stop.set()
        thread.join(15)
        http.stop()
    assert not thread.is_alive()
