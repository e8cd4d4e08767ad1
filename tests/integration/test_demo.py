"""The demo, as `make demo` runs it but shorter: it flags exactly the drifted features."""

from __future__ import annotations

import io

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
