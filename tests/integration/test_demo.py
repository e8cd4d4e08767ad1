"""The demo, as `make demo` runs it but shorter: it flags exactly the drifted features."""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from consumers.demo import DRIFTED, run_demo

pytestmark = pytest.mark.integration


def test_demo_flags_exactly_the_drifted_features(kafka_bootstrap):
    out = io.StringIO()
    code = run_demo(duration=25.0, bootstrap_servers=kafka_bootstrap, rate=300.0, out=out)
    text = out.getvalue()
    assert code == 0, text
    assert "OK: exactly the drifted features were flagged" in text
    assert "OK: realized and estimated accuracy both fell" in text
    assert "POST /alerts" in text
    assert "FeatureDrift(amount) firing" in text
    assert "POST /retrain" in text
    assert "retraining.requested model=fraud" in text
    for feature in DRIFTED:
        assert f"{feature}" in text
    assert "[" in text  # the live view printed at least one line
    assert re.search(r"web view http://127\.0\.0\.1:\d+/ ", text), text


def test_keep_running_leaves_the_web_view_up_until_interrupted(kafka_bootstrap):
    demo = subprocess.Popen(
        [sys.executable, "-m", "consumers.cli", "demo", "--duration", "12", "--rate", "200",
         "--bootstrap-servers", kafka_bootstrap, "--keep-running"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert demo.stdout is not None
        lines = []
        for line in demo.stdout:
            lines.append(line)
            if line.startswith("still running"):
                break
        text = "".join(lines)
        (base,) = re.findall(r"web view (http://127\.0\.0\.1:\d+)/ ", text)
        assert "== driftline demo summary ==" in text
        assert f"open {base}/ in a browser" in lines[-1]
        with urllib.request.urlopen(base + "/", timeout=10) as r:
            assert r.status == 200
            assert b"assets/view.js" in r.read()

        # still consuming: the window keeps moving after the scripted part
        def window_end():
            with urllib.request.urlopen(base + "/api/v1/models/fraud", timeout=10) as r:
                return json.load(r)["evaluation"]["window"]["end"]

        first = window_end()
        deadline = time.time() + 20
        while window_end() == first and time.time() < deadline:
            time.sleep(0.5)
        assert window_end() > first
    finally:
        demo.send_signal(signal.SIGTERM)  # as `kill` does; Ctrl-C takes the same path
        out, err = demo.communicate(timeout=60)
    assert "stopping" in out
    assert "Traceback" not in err, err
    assert demo.returncode in (0, 1)
