"""The examples in examples/ run as examples/README.md says, against the test broker.

Each example directory is copied as is (so its reference path resolves against the copy
of its driftline.yaml); only the broker, the topics, the group, the HTTP port and the
state directory of the copy are changed. ``driftline run`` and the example's
``produce.py`` run as subprocesses, and /metrics must count every prediction sent.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TEXT_LOGS = ("--log-format", "text")
SENT = re.compile(r"sent (\d+) predictions, (\d+) labels")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> list[tuple[str, dict[str, str], float]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
        text = r.read().decode()
    return [
        (s.name, s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"driftline run exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"driftline run not ready after {timeout:g}s")


def copy_example(
    name: str, tmp_path: Path, bootstrap: str, make_topic: Callable[..., str], group: str
) -> tuple[Path, dict[str, Any]]:
    """The example copied to ``tmp_path``, its config pointed at the test's broker."""
    example = tmp_path / name
    shutil.copytree(EXAMPLES / name, example, ignore=shutil.ignore_patterns("state", "__pycache__"))
    path = example / "driftline.yaml"
    config = yaml.safe_load(path.read_text())
    kafka = config["kafka"]
    kafka["bootstrap_servers"] = bootstrap
    kafka["group_id"] = group
    for key in ("predictions_topic", "ground_truth_topic", "dead_letter_topic", "panes_topic"):
        kafka[key] = make_topic()
    config["http"]["port"] = free_port()
    config["state"]["dir"] = str(tmp_path / "state")
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, config


@pytest.mark.parametrize(
    ("name", "model", "realized"),
    [("fraud", "fraud", True), ("regression", "delivery_eta", False)],
)
def test_example_runs_end_to_end(
    name: str,
    model: str,
    realized: bool,
    tmp_path: Path,
    kafka_bootstrap: str,
    make_topic: Callable[..., str],
    make_group: Callable[[], str],
) -> None:
    config_path, config = copy_example(name, tmp_path, kafka_bootstrap, make_topic, make_group())
    kafka, port = config["kafka"], config["http"]["port"]
    log = tmp_path / "service.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log_file = log.open("wb")
    service = subprocess.Popen(
        [sys.executable, "-m", "consumers.cli", "run", "--config", str(config_path), *TEXT_LOGS],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        env=env,
    )
    try:
        wait_ready(port, service, timeout=30)
        produced = subprocess.run(
            [
                sys.executable,
                str(config_path.parent / "produce.py"),
                *("--bootstrap-servers", kafka_bootstrap),
                *("--seconds", "4", "--rate", "100", "--label-delay", "2"),
                *("--predictions-topic", kafka["predictions_topic"]),
                *("--ground-truth-topic", kafka["ground_truth_topic"]),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env=env,
            check=False,
        )
        assert produced.returncode == 0, produced.stdout + produced.stderr
        match = SENT.fullmatch(produced.stdout.strip().splitlines()[-1])
        assert match, produced.stdout
        predictions, labels = int(match[1]), int(match[2])
        assert predictions == labels >= 300

        def counted(samples: list[tuple[str, dict[str, str], float]], kind: str) -> float:
            return sum(
                v
                for n, lab, v in samples
                if n == "driftline_events_total"
                and lab.get("model") == model
                and lab.get("kind") == kind
            )

        # the first pane closes pane + allowed_lateness (20 s) after the first event
        deadline = time.time() + 40
        samples: list[tuple[str, dict[str, str], float]] = []
        performance: dict[str, float] = {}
        while time.time() < deadline:
            assert service.poll() is None, log.read_text()[-3000:]
            samples = scrape(port)
            performance = {
                lab["metric"]: v
                for n, lab, v in samples
                if n == "driftline_model_performance" and lab.get("model") == model
            }
            done = (
                counted(samples, "prediction") == predictions
                and counted(samples, "ground_truth") == labels
                and (performance or not realized)
            )
            if done:
                break
            time.sleep(0.5)
        assert counted(samples, "prediction") == predictions, log.read_text()[-3000:]
        assert counted(samples, "ground_truth") == labels
        if realized:
            assert performance, "no driftline_model_performance for the model"
            assert 0.0 <= performance["accuracy"] <= 1.0, performance
            print(f"{model}: realized performance {performance}")
        invalid = [s for s in samples if s[0] == "driftline_events_invalid_total" and s[2] > 0]
        assert not invalid, invalid
    finally:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(15)
        except subprocess.TimeoutExpired:
            service.kill()
            service.wait(5)
        log_file.close()
