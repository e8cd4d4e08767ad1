"""Segments on a real broker: two input partitions merged by stage 2, labels joined to the
segment of their prediction, every segment's numbers equal to numpy/scipy/scikit-learn."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families
from scipy import stats
from sklearn import metrics as skm

from consumers.http import HttpServer
from consumers.loop import ConsumerLoop
from consumers.service import Service
from monitor.config import DriftlineConfig

pytestmark = pytest.mark.integration

REGIONS = np.array(["eu", "us", "ap", "sa"], dtype=object)
TOP_K = 2


def _reference(path: Path, rng: np.random.Generator, n: int = 6000) -> None:
    region = rng.choice(REGIONS, n, p=[0.4, 0.3, 0.2, 0.1])
    x = rng.normal(np.where(region == "eu", 1.0, 0.0), 1.0)
    score = 1 / (1 + np.exp(-x))
    lines = ["x,tags.region,prediction"]
    lines += [f"{a},{r},{p}" for a, r, p in zip(x, region, score, strict=True)]
    path.write_text("\n".join(lines) + "\n")


def _scrape(port: int) -> list[tuple[str, dict[str, str], float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def _api(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/models/fraud", timeout=5) as r:
        data: dict[str, Any] = json.loads(r.read())
    return data


def test_each_segment_equals_numpy_scipy_and_sklearn_across_two_partitions(
    tmp_path, kafka_bootstrap, make_topic, make_group, consumer_config
):
    rng = np.random.default_rng(14)
    ref = tmp_path / "ref.csv"
    _reference(ref, rng)
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
                    "reference": {"path": str(ref)},
                    "segments": ["tags.region"],
                    "segmenting": {"top_k": TOP_K},
                    "kpis": {
                        "events": {"agg": "count"},
                        "caught_x": {
                            "agg": "sum",
                            "field": "x",
                            "where": {"prediction": "positive", "label": "positive"},
                        },
                    },
                }
            ],
        }
    )
    n = 4000
    t0 = float(int(time.time()) // 10 * 10 - 300)
    times = t0 + np.arange(n) * 0.05  # 200 s of predictions
    # 1 000 distinct values besides the reference's: still TOP_K + 1 segments
    region = rng.choice(np.append(REGIONS, "zz"), n, p=[0.2, 0.2, 0.3, 0.1, 0.2]).astype(object)
    region[region == "zz"] = [f"r{i}" for i in rng.integers(0, 1000, int((region == "zz").sum()))]
    x = rng.normal(np.where(region == "us", 1.0, 0.0), 1.0)
    scores = 1 / (1 + np.exp(-(x + rng.normal(0, 1, n))))
    truth = (rng.random(n) < scores).astype(int)
    labelled = rng.random(n) < 0.6
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=10)
    for i in range(n):
        event = {
            "event_id": f"e{i}",
            "model": "fraud",
            "timestamp": float(times[i]),
            "features": {"x": float(x[i])},
            "prediction": float(scores[i]),
            "tags": {"region": region[i]},
        }
        producer.send(preds, key=f"e{i}".encode(), value=msgspec.json.encode(event))
    for i in np.flatnonzero(labelled):
        label = {"event_id": f"e{i}", "model": "fraud", "label": str(truth[i])}
        producer.send(gt, key=f"e{i}".encode(), value=msgspec.json.encode(label))
    producer.flush()
    producer.close()

    service = Service(config)
    http = HttpServer("127.0.0.1", 0, service.registry, service)
    http.start()
    stop = threading.Event()
    loop = ConsumerLoop(service, config.kafka, checkpoint_interval=1.0)
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()

    def converged() -> dict[str, Any] | None:
        ev = _api(http.port)["evaluation"]
        if ev is None:
            return None
        w = ev["window"]
        inside = (times >= w["start"]) & (times < w["end"])
        want = int((inside & labelled).sum())
        return ev if ev["performance"]["labelled_events"] == want and want > 0 else None

    try:
        deadline = time.time() + 90
        while (ev := converged()) is None and time.time() < deadline:
            time.sleep(0.3)
        assert ev is not None, "the evaluation never reflected every joined label"
        samples = _scrape(http.port)
    finally:
        stop.set()
        thread.join(15)
        http.stop()
    assert not thread.is_alive()

    inside = (times >= ev["window"]["start"]) & (times < ev["window"]["end"])
    top = ("eu", "us")  # the reference's two most frequent regions
    groups = {f"tags.region={r}": region == r for r in top}
    groups["tags.region=other"] = ~np.isin(region, top)
    assert set(ev["segments"]) == set(groups)
    ref_rows = np.genfromtxt(ref, delimiter=",", names=True, dtype=None, encoding="utf-8")
    ref_region = ref_rows["tagsregion"].astype(object)
    ref_groups = {f"tags.region={r}": ref_region == r for r in top}
    ref_groups["tags.region=other"] = ~np.isin(ref_region, top)
    caught = (truth == 1) & (scores >= 0.5) & labelled
    assert ev["kpis"]["caught_x"] == pytest.approx(x[inside & caught].sum())
    for name, member in groups.items():
        seg = ev["segments"][name]
        rows = inside & member
        assert seg["window"]["events"] == int(rows.sum())
        # business KPIs, a label-aware one joined through the partitions' label joins
        assert seg["kpis"]["events"] == int(rows.sum())
        assert seg["kpis"]["caught_x"] == pytest.approx(x[rows & caught].sum())
        pairs = rows & labelled
        y, p = truth[pairs] == 1, scores[pairs]
        realized = seg["performance"]["realized"]
        assert seg["performance"]["labelled_events"] == int(pairs.sum())
        assert realized["accuracy"] == pytest.approx(skm.accuracy_score(y, p >= 0.5))
        assert realized["recall"] == pytest.approx(skm.recall_score(y, p >= 0.5))
        ks = seg["features"][0]["scores"]["ks"]["score"]
        ref_x = ref_rows["x"][ref_groups[name]]
        assert ks == pytest.approx(stats.ks_2samp(ref_x, x[rows]).statistic, abs=0.03)
    # exported with a ``segment`` label, bounded to TOP_K + 1 values
    traffic = {
        labels["segment"]: value
        for metric, labels, value in samples
        if metric == "driftline_segment_traffic_ratio"
    }
    assert traffic.keys() == groups.keys()
    for name, member in groups.items():
        assert traffic[name] == pytest.approx((inside & member).sum() / inside.sum())
    segments = {labels.get("segment") for _, labels, _ in samples} - {None}
    assert segments == set(groups)
