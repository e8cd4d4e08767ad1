"""A real Prometheus scrapes the running service, fed by the real broker with drifting traffic.

Through Prometheus's HTTP API, every PromQL expression of every dashboard panel and every
recording rule returns at least one series (except the panels and rules of metrics the
service does not export yet, listed below), and the feature-drift alert fires and reaches
a real Alertmanager (when installed). The service's /metrics passes ``promtool check
metrics``. Prometheus and Alertmanager run from the distribution's packages on free
loopback ports with their storage in the test's tmp_path, and are stopped at the end.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import msgspec
import numpy as np
import pytest
import yaml
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from consumers.demo import Receiver
from consumers.http import HttpServer
from consumers.loop import ConsumerLoop, open_store
from consumers.service import Service
from monitor.config import DriftlineConfig

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus"
MODEL = "fraud"
DRIFTED = "amount"
EVENTS = 6000
COUNTRIES = np.array(["FR", "DE", "US", "GB"], dtype=object)

# Panels whose metrics the service does not export yet: they must return nothing. The
# test fails when one of them starts returning data (remove it from here then), and when
# any other panel returns nothing.
NOT_YET_EXPORTED: set[tuple[str, str]] = set()  # none: every panel has data
# Recording rules over metrics not exported yet (none: every rule has data).
NOT_YET_RECORDED: set[str] = set()

_PROMETHEUS = shutil.which("prometheus")
# Debian's package names the binary prometheus-alertmanager
_ALERTMANAGER = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
if _PROMETHEUS is None:
    pytest.skip(
        "prometheus not installed: apt-get install prometheus (Debian/Ubuntu)",
        allow_module_level=True,
    )


def _dashboards_module() -> ModuleType:
    """grafana/dashboards.py, imported as the script imports its sibling modules."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(ROOT / "grafana"))
        return importlib.import_module("dashboards")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _rows(rng: np.random.Generator, n: int, drifted: bool) -> dict[str, np.ndarray]:
    return {
        "amount": rng.normal(1.0 if drifted else 0.0, 1.0, n),
        "age": rng.normal(40.0, 10.0, n),
        "country": rng.choice(COUNTRIES, n, p=[0.4, 0.3, 0.2, 0.1]),
        "prediction": rng.beta(2.0, 5.0, n),
    }


def _write_reference(path: Path, rng: np.random.Generator) -> None:
    cols = _rows(rng, 5000, drifted=False)
    lines = [",".join(cols)]
    lines += [
        ",".join(map(str, row)) for row in zip(*(c.tolist() for c in cols.values()), strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")


def _labels(rng: np.random.Generator, t0: float) -> Iterator[bytes]:
    """Ground truth for most predictions, seconds later; for when the label join is wired."""
    for i in range(0, EVENTS, 5):
        label = "fraud" if rng.random() < 0.3 else "ok"
        yield msgspec.json.encode(
            {"event_id": f"e{i}", "model": MODEL, "label": label, "timestamp": t0 + 40.0}
        )


def _records(rng: np.random.Generator, t0: float) -> Iterator[bytes]:
    """Drifting predictions over 30 s of event time, with a few of every kind of oddity."""
    cols = _rows(rng, EVENTS, drifted=True)
    latency = rng.gamma(2.0, 5.0, EVENTS)
    for i in range(EVENTS):
        features: dict[str, Any] = {
            "amount": float(cols["amount"][i]),
            "age": float(cols["age"][i]) if i % 50 else None,  # missing values
            # a few new categories (a 1% share of one would be drift: JS 0.07)
            "country": "ZZ" if i % 997 == 0 else str(cols["country"][i]),
        }
        if i % 200 == 0:
            features["coupon"] = "x"  # schema drift: a feature the model does not have
        event = {
            "event_id": f"e{i}",
            "model": MODEL,
            "timestamp": t0 + i * 30.0 / EVENTS,
            "features": features,
            "prediction": float(cols["prediction"][i]),
            "latency_ms": float(latency[i]),
            "model_version": "v1",
        }
        yield msgspec.json.encode(event)
        if i % 2 == 0:  # a shadow challenger answers half of the requests too
            shadow = {**event, "model_version": "v2", "prediction": 1.0 - event["prediction"]}
            yield msgspec.json.encode(shadow)
        if i % 100 == 0:  # dead letters: one unreadable, one with a bad field
            yield b"{not json"
            yield msgspec.json.encode({"event_id": f"bad{i}", "model": MODEL, "features": 3})


def _rules_for_e2e(directory: Path) -> list[str]:
    """The rule files with every `for:` cut to 0s, so alerts fire at their first evaluation."""
    names = []
    for name in ("recording_rules.yml", "alert_rules.yml"):
        data = yaml.safe_load((RULES / name).read_text())
        for group in data["groups"]:
            for rule in group["rules"]:
                if "for" in rule:
                    rule["for"] = "0s"
        (directory / name).write_text(yaml.safe_dump(data, sort_keys=False))
        names.append(name)
    return names


class Server:
    """A Prometheus-family binary on a free loopback port, its data in ``directory``."""

    def __init__(self, binary: str, directory: Path, args: list[str]) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = directory / "log.txt"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [binary, f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.process.args[0]} exited:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"not ready after {timeout}s:\n{self.log.read_text()}")

    def get(self, path: str, **params: str) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        return _get(f"{self.url}{path}{query}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def start_alertmanager(directory: Path) -> Server | None:
    """Alertmanager with deploy/alertmanager/alertmanager.yml, when it is installed."""
    if _ALERTMANAGER is None:
        return None
    return Server(
        _ALERTMANAGER,
        directory,
        [
            f"--config.file={ROOT / 'deploy' / 'alertmanager' / 'alertmanager.yml'}",
            f"--storage.path={directory / 'data'}",
            "--cluster.listen-address=",  # no gossip port: a single, private instance
        ],
    )


def start_prometheus(directory: Path, target: str, alertmanager: Server | None) -> Server:
    """Prometheus scraping ``target`` every second with the e2e copy of the rules."""
    directory.mkdir(parents=True, exist_ok=True)
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": _rules_for_e2e(directory),
        "scrape_configs": [{"job_name": "driftline", "static_configs": [{"targets": [target]}]}],
    }
    if alertmanager is not None:
        targets = [f"127.0.0.1:{alertmanager.port}"]
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": targets}]}]}
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config))
    return Server(
        str(_PROMETHEUS),
        directory,
        [
            f"--config.file={directory / 'prometheus.yml'}",
            f"--storage.tsdb.path={directory / 'data'}",
        ],
    )


def query(prometheus: Server, expr: str) -> list[dict[str, Any]]:
    body = prometheus.get("/api/v1/query", query=expr)
    assert body["status"] == "success", (expr, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def _scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def _samples(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(_scrape_text(port)):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_dashboards_and_rules_against_a_real_prometheus(
    tmp_path, kafka_bootstrap, make_topic, make_group, consumer_config
):
    rng = np.random.default_rng(7)
    reference = tmp_path / "reference.csv"
    _write_reference(reference, rng)
    receiver = Receiver().url  # the on-call webhook and the CI that retrains
    topic, ground_truth, dead_letters = make_topic(), make_topic(), make_topic()
    config = DriftlineConfig.model_validate(
        {
            "kafka": {
                "bootstrap_servers": kafka_bootstrap,
                "group_id": make_group(),
                "predictions_topic": topic,
                "ground_truth_topic": ground_truth,
                "dead_letter_topic": dead_letters,
                "consumer": consumer_config(),
                "poll_timeout_ms": 200,
            },
            "http": {"host": "127.0.0.1", "port": 0},
            "windows": {"pane": "2s", "size": "10s", "allowed_lateness": "1s"},
            "state": {"dir": str(tmp_path / "state"), "checkpoint_interval": "1s"},
            "models": [
                {
                    "name": MODEL,
                    "task": "binary_classification",
                    "positive_label": "fraud",
                    "reference": {"path": str(reference)},
                    "drift": {"min_events": 200},
                    # the Segments row and the KPI panel need a sliced model with a KPI
                    "segments": ["country"],
                    "kpis": {"amount_total": {"agg": "sum", "field": "amount"}},
                }
            ],
            "alerts": {
                "rules": [
                    {
                        "alert": "FeatureDrift",
                        "metric": "driftline_feature_drifted",
                        "match": {"model": MODEL},
                        "threshold": 1,
                    }
                ],
                "sinks": [{"name": "ops", "type": "webhook", "url": f"{receiver}/alerts"}],
            },
            "retraining": [
                {
                    "model": MODEL,
                    "on_alerts": ["FeatureDrift"],
                    "target": {"type": "http", "url": f"{receiver}/retrain"},
                }
            ],
        }
    )
    # wired as `driftline run` wires it
    service = Service(config)
    service.enable_alerting(tmp_path / "alerts", time.time())
    http = HttpServer("127.0.0.1", 0, service.registry, service)
    http.start()
    stop = threading.Event()
    loop = ConsumerLoop(
        service,
        config.kafka,
        store=open_store(config.state, config.kafka),
        checkpoint_interval=config.state.checkpoint_interval,
    )
    consumer = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    consumer.start()
    servers: list[Server] = []
    try:
        alertmanager = start_alertmanager(tmp_path / "alertmanager")
        if alertmanager is not None:
            servers.append(alertmanager)
        prometheus = start_prometheus(
            tmp_path / "prometheus", f"127.0.0.1:{http.port}", alertmanager
        )
        servers.append(prometheus)
        for server in servers:
            server.wait_ready()
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, linger_ms=10)
        t0 = time.time() - 60.0
        for record in _records(rng, t0):
            producer.send(topic, record)
        for record in _labels(rng, t0):
            producer.send(ground_truth, record)
        producer.flush()
        producer.close()

        def processed() -> bool:
            m = _samples(http.port)
            return (
                m.get(("driftline_events_total", (("kind", "prediction"), ("model", MODEL))))
                == EVENTS + EVENTS // 2  # the shadow's predictions are events too
                and m.get(("driftline_feature_drifted", (("feature", DRIFTED), ("model", MODEL))))
                == 1.0
                and ("driftline_checkpoint_timestamp_seconds", ()) in m
            )

        _wait(processed, 60, "the service to consume every event and flag the drift")

        # the drift alert fires in Prometheus (the e2e copy of the rules has `for: 0s`)
        def drift_alerts() -> list[dict[str, str]]:
            return [
                a["labels"]
                for a in prometheus.get("/api/v1/alerts")["data"]["alerts"]
                if a["labels"]["alertname"] == "DriftlineFeatureDrift" and a["state"] == "firing"
            ]

        _wait(lambda: bool(drift_alerts()), 30, "DriftlineFeatureDrift to fire")
        assert {(a["model"], a["feature"]) for a in drift_alerts()} == {(MODEL, DRIFTED)}

        # every dashboard query and recording rule, once Prometheus has a few scrapes
        queries = _dashboards_module().panel_queries(model=MODEL, rate_interval="1m")
        recording = [
            (rule["record"], rule["expr"])
            for group in yaml.safe_load((RULES / "recording_rules.yml").read_text())["groups"]
            for rule in group["rules"]
        ]
        empty_panels: set[tuple[str, str]] = set()
        empty_rules: set[str] = set()

        def everything_answers() -> bool:
            empty_panels.clear()
            empty_rules.clear()
            for board, panel, expr in queries:
                if not query(prometheus, expr):
                    empty_panels.add((board, panel))
            for name, expr in recording:
                if not query(prometheus, expr):
                    empty_rules.add(name)
            return empty_panels == NOT_YET_EXPORTED and empty_rules == NOT_YET_RECORDED

        with contextlib.suppress(AssertionError):  # the assertions below say which
            _wait(everything_answers, 20, "every panel and recording rule to return data")
        stale_panels, stale_rules = NOT_YET_EXPORTED - empty_panels, NOT_YET_RECORDED - empty_rules
        assert sorted(empty_panels - NOT_YET_EXPORTED) == [], "panels without data"
        assert sorted(stale_panels) == [], "these panels have data now: update NOT_YET_EXPORTED"
        assert sorted(empty_rules - NOT_YET_RECORDED) == [], "recording rules without data"
        assert sorted(stale_rules) == [], "these rules have data now: update NOT_YET_RECORDED"

        # the exposition itself passes Prometheus's linter
        check = subprocess.run(
            ["promtool", "check", "metrics"],
            input=_scrape_text(http.port),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert (check.returncode, check.stdout + check.stderr) == (0, "")

        # Prometheus delivers the alert to Alertmanager (deploy/alertmanager/alertmanager.yml)
        if alertmanager is None:
            warnings.warn(
                "alertmanager not installed (apt-get install prometheus-alertmanager): "
                "alert delivery not checked",
                stacklevel=1,
            )
        else:

            def delivered() -> set[tuple[str, str]]:
                return {
                    (a["labels"].get("model"), a["labels"].get("feature"))
                    for a in alertmanager.get("/api/v2/alerts")
                    if a["labels"]["alertname"] == "DriftlineFeatureDrift"
                }

            _wait(lambda: bool(delivered()), 30, "the alert to reach Alertmanager")
            assert delivered() == {(MODEL, DRIFTED)}
    finally:
        for server in servers:
            server.stop()
        stop.set()
        consumer.join(15)
        http.stop()
    assert all(server.process.returncode is not None for server in servers)
    assert not consumer.is_alive()
