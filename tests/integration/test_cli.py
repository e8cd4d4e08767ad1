"""The ``driftline`` command line as a user runs it: real processes, real files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

DRIFTLINE = [sys.executable, "-m", "consumers.cli"]


def run(*args: str, timeout: float = 60, env: dict[str, str] | None = None):
    return subprocess.run(
        [*DRIFTLINE, *args], capture_output=True, text=True, timeout=timeout, env=env
    )


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    ref = tmp_path / "ref.csv"
    rows = ["amount,country,prediction"]
    rows += [
        f"{a},{c},{p}"
        for a, c, p in zip(
            rng.lognormal(3, 1, 500), rng.choice(["FR", "DE"], 500), rng.random(500), strict=True
        )
    ]
    ref.write_text("\n".join(rows) + "\n")
    cfg = tmp_path / "driftline.yaml"
    cfg.write_text(
        "models:\n"
        "  - name: fraud\n"
        "    reference: {path: ref.csv}\n"
        "    features: {amount: {type: numerical}, country: {type: categorical}}\n"
    )
    return cfg


def test_check_config_prints_the_resolved_config(config_file):
    r = run("check-config", "--config", str(config_file))
    assert r.returncode == 0, r.stderr
    assert "bootstrap_servers: localhost:9092" in r.stdout
    assert "fraud" in r.stdout


def test_check_config_bad_config_exits_2_naming_file_key_and_reason(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("http: {port: 99999}\nmodels:\n  - name: m\n    reference: {path: r.csv}\n")
    r = run("check-config", "--config", str(cfg))
    assert r.returncode == 2
    assert "bad.yaml" in r.stderr
    assert "http.port" in r.stderr


@pytest.mark.parametrize(
    ("kpi", "reason"),
    [
        ("{agg: sum, field: amout}", "kpi caught: amout is no numerical reference column"),
        ("{agg: mean, field: country}", "kpi caught: country is no numerical reference column"),
        (
            '{agg: sum, expr: "amount * (1 - discont)"}',
            "kpi caught: discont in amount * (1 - discont) is no numerical reference column",
        ),
        (
            '{agg: mean, expr: "amount / country"}',
            "kpi caught: country in amount / country is no numerical reference column",
        ),
    ],
)
def test_check_config_refuses_a_kpi_on_a_column_the_reference_lacks(config_file, kpi, reason):
    # features are inferred here: only the reference can tell that the field is wrong, and
    # a sum of a column that never comes would be exported as 0 forever
    config_file.write_text(
        f"models:\n  - name: fraud\n    reference: {{path: ref.csv}}\n    kpis: {{caught: {kpi}}}\n"
    )
    r = run("check-config", "--config", str(config_file))
    assert r.returncode == 2, r.stdout
    assert "driftline.yaml: models[0].kpis:" in r.stderr
    assert reason in r.stderr


def test_check_config_prints_a_kpi_expression_in_normal_form_or_names_its_key(config_file):
    config_file.write_text(
        "models:\n  - name: fraud\n    reference: {path: ref.csv}\n"
        '    kpis: {net: {agg: sum, expr: "amount*(1-prediction)"}}\n'
    )
    r = run("check-config", "--config", str(config_file))
    assert r.returncode == 0, r.stderr
    assert "expr: amount * (1 - prediction)" in r.stdout
    config_file.write_text(
        "models:\n  - name: fraud\n    reference: {path: ref.csv}\n"
        "    kpis: {net: {agg: sum, expr: \"__import__('os').getcwd()\"}}\n"
    )
    r = run("check-config", "--config", str(config_file))
    assert r.returncode == 2, r.stdout
    assert "driftline.yaml: models[0].kpis.net.expr: a call is not allowed" in r.stderr


def test_check_config_refuses_segments_whose_pane_would_be_too_large(tmp_path):
    rng = np.random.default_rng(0)
    rows = 3000
    cols = {f"x{i}": rng.normal(size=rows).round(5).astype(str) for i in range(20)}
    cols |= {f"c{j}": np.char.add("v", rng.integers(0, 60, rows).astype(str)) for j in range(3)}
    lines = [",".join(cols)] + [",".join(r) for r in zip(*cols.values(), strict=True)]
    (tmp_path / "ref.csv").write_text("\n".join(lines) + "\n")
    cfg = tmp_path / "driftline.yaml"
    cfg.write_text(
        "models:\n  - name: wide\n    reference: {path: ref.csv}\n"
        "    segments: [c0, c1, c2]\n    segmenting: {top_k: 60, max_pane_bytes: 2097152}\n"
    )
    r = run("check-config", "--config", str(cfg))
    assert r.returncode == 2, r.stdout
    assert "driftline.yaml: models[0].segments: model wide: segments [c0, c1, c2] with " in (
        r.stderr
    )
    assert re.search(r"a pane would take [0-9,]+ bytes, over segmenting.max_pane_bytes", r.stderr)
    cfg.write_text(cfg.read_text().replace("top_k: 60", "top_k: 5"))
    r = run("check-config", "--config", str(cfg))
    assert r.returncode == 0, r.stderr


def test_reference_build_writes_a_profile_the_service_accepts(tmp_path, config_file):
    out = tmp_path / "fraud.profile.json"
    r = run(
        "reference",
        "build",
        "--config",
        str(config_file),
        "--model",
        "fraud",
        "--input",
        str(config_file.parent / "ref.csv"),
        "--output",
        str(out),
    )
    assert r.returncode == 0, r.stderr
    profile = json.loads(out.read_text())
    assert profile["format"] == "driftline.reference/v1"
    assert [f["name"] for f in profile["features"]] == ["amount", "country"]
    assert sum(profile["features"][0]["counts"]) == 500
    assert profile["prediction"]["type"] == "numerical"
    # the profile is a valid reference.path
    cfg2 = tmp_path / "from_profile.yaml"
    cfg2.write_text(f"models:\n  - name: fraud\n    reference: {{path: {out}}}\n")
    from consumers.configfile import load_config
    from consumers.service import Service

    service = Service(load_config(cfg2))
    assert service.models == ["fraud"]


def test_reference_build_unknown_model_and_bad_input(tmp_path, config_file):
    r = run(
        "reference",
        "build",
        "--config",
        str(config_file),
        "--model",
        "nope",
        "--input",
        str(config_file.parent / "ref.csv"),
    )
    assert r.returncode == 2
    assert "nope" in r.stderr
    r = run(
        "reference",
        "build",
        "--config",
        str(config_file),
        "--model",
        "fraud",
        "--input",
        str(tmp_path / "missing.parquet"),
    )
    assert r.returncode == 2
    assert "missing.parquet" in r.stderr


def test_usage_error_exits_2():
    r = run("frobnicate")
    assert r.returncode == 2


def test_rules_export_passes_promtool(tmp_path, config_file):
    import shutil

    cfg = tmp_path / "alerts.yaml"
    cfg.write_text(
        config_file.read_text().replace(
            "reference: {path: ref.csv}", f"reference: {{path: {config_file.parent / 'ref.csv'}}}"
        )
        + "alerts:\n  rules:\n"
        "    - {alert: FeatureDrift, metric: driftline_feature_drifted, match: {model: fraud},"
        " op: '>=', threshold: 1, for: 5m, keep_firing_for: 10m,"
        " annotations: {summary: '{{ feature }} drifted on {{ model }}'}}\n"
    )
    r = run("rules", "export", "--config", str(cfg))
    assert r.returncode == 0, r.stderr
    assert "FeatureDrift" in r.stdout
    assert 'sum without (instance, pod) (driftline_feature_drifted{model="fraud"}) >= 1' in r.stdout
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed: apt-get install prometheus")
    out = tmp_path / "rules.yml"
    out.write_text(r.stdout)
    check = subprocess.run([promtool, "check", "rules", str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
