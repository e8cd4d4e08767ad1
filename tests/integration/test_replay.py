"""``driftline replay`` on files of events: windows, counts, drift and accuracy checked
against numpy and scikit-learn, and against the running service on the same events."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import msgspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kafka import KafkaProducer
from sklearn.metrics import accuracy_score

from consumers.configfile import load_config
from consumers.loop import ConsumerLoop
from consumers.model_specs import load_reference, policy_of
from consumers.replay import replay_files
from consumers.service import Service

DRIFTLINE = [sys.executable, "-m", "consumers.cli"]
PANE, SIZE, LATENESS = 60.0, 600.0, 10.0
RATE = 10  # events per second
MINUTES = 20
DRIFT_AT = 600.0  # seconds after the start: feature x shifts by one standard deviation
CATS = np.array(["a", "b", "c"], dtype=object)
MIN_EVENTS = 1000  # values of a feature in a window before it is judged


@dataclass
class Events:
    """Generated predictions and their delayed labels, as columns."""

    start: float
    time: np.ndarray
    x: np.ndarray
    y: np.ndarray
    c: np.ndarray
    score: np.ndarray
    y_true: np.ndarray
    labelled: np.ndarray
    label_time: np.ndarray

    def ids(self) -> list[str]:
        return [f"e{i}" for i in range(len(self.time))]

    def prediction_records(self) -> list[dict[str, Any]]:
        return [
            {
                "event_id": f"e{i}",
                "model": "fraud",
                "timestamp": _iso(float(self.time[i])),
                "features": {"x": float(self.x[i]), "y": float(self.y[i]), "c": str(self.c[i])},
                "prediction": float(self.score[i]),
            }
            for i in range(len(self.time))
        ]

    def label_records(self) -> list[dict[str, Any]]:
        order = np.flatnonzero(self.labelled)
        order = order[np.argsort(self.label_time[order], kind="stable")]
        return [
            {
                "event_id": f"e{i}",
                "model": "fraud",
                "label": int(self.y_true[i]),
                "timestamp": float(self.label_time[i]),
            }
            for i in order.tolist()
        ]


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")


def generate(start: float, seed: int = 7) -> Events:
    rng = np.random.default_rng(seed)
    n = MINUTES * 60 * RATE
    t = start + np.arange(n) / RATE
    x = rng.normal(0.0, 1.0, n) + np.where(t - start >= DRIFT_AT, 1.0, 0.0)
    y = rng.normal(0.0, 1.0, n)
    c = rng.choice(CATS, n, p=[0.5, 0.3, 0.2])
    score = rng.random(n)
    # the truth agrees with the prediction three times out of four
    agree = rng.random(n) < 0.75
    y_true = np.where(agree, score >= 0.5, score < 0.5).astype(int)
    labelled = rng.random(n) < 0.8
    # at most 30 s late: a window's labels all reach stage 2 with the heartbeat (every 30 s)
    # before the window moves on (a pane and the allowed lateness after its last event)
    label_time = t + rng.uniform(1.0, 30.0, n)
    return Events(start, t, x, y, c, score, y_true, labelled, label_time)


def write_jsonl(path: Path, records: list[dict[str, Any]], extra: list[bytes] = ()) -> Path:
    lines = [msgspec.json.encode(r) for r in records]
    path.write_bytes(b"\n".join([*lines, *extra]) + b"\n")
    return path


def write_config(tmp_path: Path, alerts: dict[str, Any] | None = None, **kafka: Any) -> Path:
    rng = np.random.default_rng(0)
    n = 5000
    rows = ["x,y,c,prediction"]
    rows += [
        f"{a},{b},{c},{p}"
        for a, b, c, p in zip(
            rng.normal(0, 1, n),
            rng.normal(0, 1, n),
            rng.choice(CATS, n, p=[0.5, 0.3, 0.2]),
            rng.random(n),
            strict=True,
        )
    ]
    (tmp_path / "ref.csv").write_text("\n".join(rows) + "\n")
    config = {
        "windows": {"pane": "1m", "size": "10m", "allowed_lateness": "10s"},
        "models": [
            {
                "name": "fraud",
                "task": "binary_classification",
                "positive_label": 1,
                "decision_threshold": 0.5,
                "reference": {"path": "ref.csv"},
                "drift": {"min_events": MIN_EVENTS},
                "features": {
                    "x": {"type": "numerical"},
                    "y": {"type": "numerical"},
                    "c": {"type": "categorical"},
                },
            }
        ],
        **({"kafka": kafka} if kafka else {}),
        **({"alerts": alerts} if alerts else {}),
    }
    path = tmp_path / "driftline.yaml"
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def run_replay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DRIFTLINE, "replay", *args], capture_output=True, text=True, timeout=300
    )


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# last month's events: validation and the watermark run on the replay clock, not today's
START = datetime(2026, 10, 5, 8, 0, tzinfo=UTC).timestamp()


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.received.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_replay_windows_counts_drift_and_accuracy(tmp_path):
    ev = generate(START)
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    rule = {
        "alert": "XDrifted",
        "metric": "driftline_feature_drifted",
        "match": {"feature": "x"},
        "threshold": 1,
        "for": "2m",
    }
    sink = {"name": "hook", "type": "webhook", "url": f"http://127.0.0.1:{hook.server_port}/"}
    config = write_config(tmp_path, alerts={"rules": [rule], "sinks": [sink]})
    events = write_jsonl(tmp_path / "events.jsonl", ev.prediction_records())
    labels = write_jsonl(tmp_path / "labels.jsonl", ev.label_records())
    out = tmp_path / "out.jsonl"
    r = run_replay(
        "--config", str(config), "--input", str(events), "--labels", str(labels),
        "--output", str(out),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    settings = load_config(config).models[0]
    x_null = load_reference(settings, config.parent).feature("x").null_table()
    alpha = policy_of(settings).feature_alpha(3, 60.0, 10)

    # one window per pane closed, consecutive (the first ones are still empty, as the
    # service's are), up to the pane of the last label
    ends = [_epoch(line["window_end"]) for line in lines]
    assert ends[0] <= START + PANE
    assert ends == [ends[0] + PANE * k for k in range(len(lines))]
    assert max(ev.label_time) <= ends[-1] < max(ev.label_time) + PANE
    for line, end in zip(lines, ends, strict=True):
        assert _epoch(line["window_start"]) == end - SIZE
        assert line["model"] == "fraud"
        in_window = (ev.time >= end - SIZE) & (ev.time < end)
        assert line["events"] == int(in_window.sum())
        assert line["features"]["x"]["n"] == int(in_window.sum())
        assert line["features"]["x"]["method"] == "wasserstein"
        # calibrated for the window's own n, at the alpha of 3 features on 10 panes
        x = line["features"]["x"]
        if x["n"] == 0:
            assert x["threshold"] is None
        else:
            assert x["threshold"] == pytest.approx(x_null.threshold("wasserstein", x["n"], alpha))
        # x drifted once a few minutes of shifted values are in the window, never before
        drifted_minutes = (end - (START + DRIFT_AT)) / 60.0
        if in_window.sum() < MIN_EVENTS:
            assert line["features"]["x"]["drifted"] is None, line
        elif drifted_minutes <= 0:
            assert line["features"]["x"]["drifted"] is False, line
        elif drifted_minutes >= 3:
            assert line["features"]["x"]["drifted"] is True, line
        assert line["features"]["y"]["drifted"] is not True, line
        assert line["features"]["c"]["drifted"] is not True, line
        # accuracy on the window's predictions that have their label (all came in time)
        joined = in_window & ev.labelled
        if joined.any():
            expected = accuracy_score(ev.y_true[joined], (ev.score[joined] >= 0.5).astype(int))
            assert line["performance"]["accuracy"] == pytest.approx(expected, rel=1e-9)
        else:
            assert line["performance"].get("accuracy") is None

    # the rule fired once, two minutes (of event time) after x first drifted; nothing was sent
    first = next(k for k, line in enumerate(lines) if line["features"]["x"]["drifted"])
    fired = [k for k, line in enumerate(lines) if line["alerts"]]
    assert fired in ([first + 2], [first + 3]), fired
    (alert,) = lines[fired[0]]["alerts"]
    assert (alert["alert"], alert["state"]) == ("XDrifted", "firing")
    assert (alert["labels"]["feature"], alert["labels"]["model"]) == ("x", "fraud")
    held = _epoch(alert["at"]) - _epoch(lines[first]["window_end"]) - LATENESS
    assert 120 <= held < 125
    hook.shutdown()
    assert _Hook.received == []

    assert f"{len(lines)} window evaluations" in r.stderr
    assert "x: drifted in" in r.stderr
    assert "1 fired, 0 resolved" in r.stderr
    assert "no notification sent" in r.stderr


def _final_window_line(lines: list[dict[str, Any]], end: float) -> dict[str, Any]:
    matching = [line for line in lines if _epoch(line["window_end"]) == end]
    assert len(matching) == 1
    return matching[0]


@pytest.mark.integration
def test_replay_says_what_the_service_exports(
    tmp_path, kafka_bootstrap, make_topic, make_group, consumer_config
):
    # recent events, for the service's wall clock; pane-aligned
    start = float(int(time.time()) // 60 * 60 - 30 * 60)
    ev = generate(start, seed=11)
    predictions_topic, labels_topic = make_topic(), make_topic()
    kafka = {
        "bootstrap_servers": kafka_bootstrap,
        "group_id": make_group(),
        "predictions_topic": predictions_topic,
        "ground_truth_topic": labels_topic,
        "dead_letter_topic": make_topic(),
        "panes_topic": make_topic(),
        "consumer": consumer_config(),
        "poll_timeout_ms": 200,
    }
    config = load_config(str(write_config(tmp_path, **kafka)))

    out = io.StringIO()
    replay_files(
        config,
        write_jsonl(tmp_path / "events.jsonl", ev.prediction_records()),
        write_jsonl(tmp_path / "labels.jsonl", ev.label_records()),
        out,
        base_dir=tmp_path,
    )
    lines = [json.loads(line) for line in out.getvalue().splitlines()]

    service = Service(config, base_dir=tmp_path)
    stop = threading.Event()
    loop = ConsumerLoop(service, config.kafka)
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    n_labels = int(ev.labelled.sum())
    # the service catching up on a backlog closes the panes its events' watermark passed:
    # the last one ends a minute before the last event
    final_end = start + MINUTES * 60 - PANE
    try:
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=10)
        for topic, records in (
            (predictions_topic, ev.prediction_records()),
            (labels_topic, ev.label_records()),
        ):
            for record in records:
                producer.send(
                    topic, key=record["event_id"].encode(), value=msgspec.json.encode(record)
                )
        producer.flush()
        producer.close()
        deadline = time.time() + 120
        evaluation = None
        while time.time() < deadline:
            counters = service.snapshot().counters["fraud"]
            evaluation = service.evaluation("fraud")
            if (
                counters.predictions == len(ev.time)
                and counters.ground_truth == n_labels
                and evaluation is not None
                and evaluation.window_end == final_end
                and evaluation.labelled_events
                == int((ev.labelled & (ev.time >= final_end - SIZE) & (ev.time < final_end)).sum())
            ):
                break
            time.sleep(0.5)
    finally:
        stop.set()
        thread.join(15)
    assert evaluation is not None
    assert evaluation.window_end == final_end, evaluation.window_end

    line = _final_window_line(lines, final_end)
    assert _epoch(line["window_start"]) == evaluation.window_start
    assert line["events"] == evaluation.window_events
    for f in evaluation.features:
        got = line["features"][f.name]
        assert f.decision is not None
        assert got["score"] == pytest.approx(f.decision.score, rel=1e-9), f.name
        assert got["threshold"] == f.threshold
        assert got["n"] == f.events
        assert got["drifted"] == f.drifted
    assert line["drifted_features_ratio"] == pytest.approx(
        evaluation.drifted_features_ratio, rel=1e-9
    )
    assert set(line["performance"]) == set(evaluation.performance)
    for metric, value in evaluation.performance.items():
        if value == value:  # not NaN
            assert line["performance"][metric] == pytest.approx(value, rel=1e-9), metric


def test_bad_lines_are_counted_not_fatal_and_labels_are_optional(tmp_path):
    ev = generate(START, seed=3)
    config = write_config(tmp_path)
    records = ev.prediction_records()[: 3 * 60 * RATE]  # three minutes
    # a clock in milliseconds: refused by validation on the replay clock, which it does
    # not move
    wrong = {**records[100], "event_id": "ms", "timestamp": START * 1000.0 + 60_000.0}
    # no timestamp: it takes the replay clock's time, as the service gives it the record's
    del records[150]["timestamp"]
    unknown = {**records[5], "event_id": "other", "model": "nobody"}
    bad = [b"this is not JSON", msgspec.json.encode(unknown), b"[1, 2]"]
    events = write_jsonl(tmp_path / "events.jsonl", [*records[:100], wrong, *records[100:]], bad)

    r = run_replay("--config", str(config), "--input", str(events))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert _epoch(lines[-1]["window_end"]) == START + 3 * PANE
    assert lines[-1]["events"] == len(records)
    assert all(line["performance"].get("accuracy") is None for line in lines)
    assert "unknown invalid_json 1" in r.stderr
    assert "unknown unknown_model 1" in r.stderr
    assert "unknown not_an_object 1" in r.stderr
    assert "fraud timestamp_out_of_range 1" in r.stderr

    labels = write_jsonl(
        tmp_path / "labels.jsonl",
        [rec for rec in ev.label_records() if int(rec["event_id"][1:]) < len(records)],
        [b"{", msgspec.json.encode({"event_id": "e1", "model": "nobody", "label": 1})],
    )
    r = run_replay("--config", str(config), "--input", str(events), "--labels", str(labels))
    assert r.returncode == 0, r.stderr
    assert "unknown invalid_json 2" in r.stderr
    assert "unknown unknown_model 2" in r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert lines[-1]["performance"]["accuracy"] is not None


def test_parquet_files_replay_like_their_jsonl(tmp_path):
    ev = generate(START, seed=5)
    config = load_config(str(write_config(tmp_path)))
    n = 4 * 60 * RATE  # four minutes
    predictions = ev.prediction_records()[:n]
    labels = [rec for rec in ev.label_records() if int(rec["event_id"][1:]) < n]
    outputs = []
    for suffix in ("jsonl", "parquet"):
        paths = [tmp_path / f"events.{suffix}", tmp_path / f"labels.{suffix}"]
        for path, records in zip(paths, (predictions, labels), strict=True):
            if suffix == "jsonl":
                write_jsonl(path, records)
            else:
                pq.write_table(pa.Table.from_pylist(records), path)
        out = io.StringIO()
        replay_files(config, paths[0], paths[1], out, base_dir=tmp_path)
        outputs.append(out.getvalue())
    assert outputs[0].count("\n") >= 4
    assert '"accuracy": 0.' in outputs[0]
    assert outputs[1] == outputs[0]


def test_a_pause_in_the_traffic_is_crossed_one_pane_at_a_time(tmp_path):
    ev = generate(START, seed=9)
    config = load_config(str(write_config(tmp_path)))
    n = 3 * 60 * RATE  # three minutes, a 30-minute pause, three minutes
    records = ev.prediction_records()[:n]
    after = ev.prediction_records()[:n]
    for i, record in enumerate(after):
        record["event_id"] = f"after{i}"
        record["timestamp"] = _iso(float(ev.time[i]) + 33 * 60)
    times = np.concatenate([ev.time[:n], ev.time[:n] + 33 * 60])
    out = io.StringIO()
    replay_files(
        config, write_jsonl(tmp_path / "events.jsonl", records + after), None, out, tmp_path
    )
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    ends = [_epoch(line["window_end"]) for line in lines]
    # every pane of the pause closed on its own: the windows move a pane at a time
    assert ends == [ends[0] + PANE * k for k in range(len(lines))]
    assert ends[-1] == START + 36 * 60
    for line, end in zip(lines, ends, strict=True):
        assert line["events"] == int(((times >= end - SIZE) & (times < end)).sum())
    assert [line["events"] for line in lines].count(0) >= 20  # the windows of the pause
