"""The first hour: a CLI that explains itself, `driftline init`, warnings for settings that
are accepted but probably not meant."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest

from consumers.cli import _parser, main
from consumers.configfile import config_warnings, load_config
from monitor.config import DriftlineConfig


def _actions(parser: argparse.ArgumentParser, path: str = "driftline"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{path} {name}")
        else:
            yield path, action


def test_every_command_and_option_has_help_and_no_markup(capsys):
    for where, action in _actions(_parser()):
        if action.dest in ("help", "command") or action.dest.endswith("_command"):
            continue
        assert action.help, f"{where} {action.option_strings or action.dest} has no help text"
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "``" not in text
    assert "init" in text


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("driftline ")
    assert len(out.split()) == 2


def test_a_method_without_a_threshold_is_calibrated():
    config = DriftlineConfig.model_validate(
        {
            "models": [
                {
                    "name": "m",
                    "reference": {"path": "r.csv"},
                    "drift": {
                        "numerical": {"method": "psi"},
                        "categorical": {"method": "chisquare"},
                    },
                }
            ]
        }
    )
    drift = config.models[0].drift
    assert (drift.numerical.threshold, drift.categorical.threshold) == ("auto", "auto")


def _config(tmp_path: Path, text: str) -> Path:
    (tmp_path / "ref.csv").write_text("x\n1\n2\n")
    path = tmp_path / "driftline.yaml"
    path.write_text(
        text + "models:\n  - {name: m, reference: {path: ref.csv}, labels: {ttl: 60}}\n"
    )
    return path


def test_suspicious_settings_are_warned_about(tmp_path):
    path = _config(tmp_path, "windows: {pane: 60, size: 2m, allowed_lateness: 5m}\n")
    env = {"DRIFTLINE_WINDOW_PANE": "10s", "DRIFTLINE_WINDOWS_SIZE": "4m", "HOME": "/root"}
    load_config(path, env)  # valid: these are warnings, not errors
    warnings = config_warnings(path, env)
    assert len(warnings) == 4, warnings
    assert "DRIFTLINE_WINDOW_PANE is not a driftline setting" in warnings[0]
    assert "did you mean DRIFTLINE_WINDOWS_PANE?" in warnings[0]
    assert "windows.pane: 60 has no unit" in warnings[1]
    assert "models[0].labels.ttl: 60 has no unit" in warnings[2]
    assert "allowed_lateness (300s) is longer than windows.size (240s)" in warnings[3]
    clean = _config(tmp_path, "windows: {pane: 60s, size: 1h, allowed_lateness: 5m}\n")
    clean.write_text(clean.read_text().replace("ttl: 60", "ttl: 1d"))
    assert config_warnings(clean, {}) == []


def _init(tmp_path: Path, csv: str, *args: str) -> tuple[str, str]:
    ref = tmp_path / "data" / "ref.csv"
    ref.parent.mkdir(exist_ok=True)
    ref.write_text(csv)
    out = tmp_path / "conf" / "driftline.yaml"
    out.parent.mkdir(exist_ok=True)
    code = main(["init", "--reference", str(ref), "--model", "fraud", "--output", str(out), *args])
    assert code == 0
    return out.read_text(), str(out)


def test_init_writes_a_valid_config_with_types_roles_and_relative_paths(tmp_path, capsys):
    rng = np.random.default_rng(0)
    rows = ["amount,country,visits,prediction,label,event_id"] + [
        f"{a:.2f},{c},{v},{p:.3f},{int(p > 0.5)},e{i}"
        for i, (a, c, v, p) in enumerate(
            zip(rng.lognormal(3, 1, 200), rng.choice(["FR", "DE"], 200), rng.integers(0, 5, 200),
                rng.random(200), strict=True)
        )
    ]  # fmt: skip
    text, out = _init(tmp_path, "\n".join(rows) + "\n")
    assert "amount: {type: numerical}" in text
    assert "country: {type: categorical}" in text
    assert "visits: {type: numerical}" in text
    assert "task: binary_classification" in text
    assert 'positive_label: "1"' in text
    assert "columns ignored: event_id" in text
    assert "NOTE" not in text
    config = load_config(out)  # valid as written, the reference found from its folder
    assert config.models[0].reference.path == "../data/ref.csv"
    assert set(config.models[0].features) == {"amount", "country", "visits"}
    assert main(["init", "--reference", str(tmp_path / "data" / "ref.csv"), "--model", "m",
                 "--output", out]) == 2  # fmt: skip
    assert "exists" in capsys.readouterr().err


def test_init_says_what_is_missing_and_what_looks_wrong(tmp_path, capsys):
    rows = ["amount,age"] + [f"{i * 1.5},{i % 70}" for i in range(60)] + ["3.0,unknown"]
    text, out = _init(tmp_path, "\n".join(rows) + "\n")
    err = capsys.readouterr().err
    assert "no 'prediction' column: prediction drift and estimated performance will be off" in err
    assert "no 'label' column" in err
    assert "column 'age' looks numeric but has text values ('unknown')" in err
    assert "age: {type: categorical}   # looks numeric" in text
    load_config(out)


def test_init_infers_regression_and_multiclass(tmp_path):
    rng = np.random.default_rng(1)
    rows = ["x,prediction,label"] + [f"{x},{x * 2},{x * 2 + 0.1}" for x in rng.normal(size=100)]
    text, _ = _init(tmp_path, "\n".join(rows) + "\n")
    assert "task: regression" in text
    rows = ["x,label"] + [f"{x},{c}" for x, c in zip(range(30), "abc" * 10, strict=True)]
    text, _ = _init(tmp_path, "\n".join(rows) + "\n", "--force")
    assert "task: multiclass_classification" in text


def test_a_missing_reference_file_is_a_configuration_error_with_its_key(tmp_path, capsys):
    rows = "x,prediction\n" + "".join(f"{i},{i / 100}\n" for i in range(50))
    (tmp_path / "ref.csv").write_text(rows)
    cfg = tmp_path / "driftline.yaml"
    cfg.write_text(
        "models:\n"
        "  - {name: a, reference: {path: ref.csv}}\n"
        "  - {name: b, reference: {path: missing.csv}}\n"
        "  - {name: c, reference: {path: sub.csv}}\n"
    )
    (tmp_path / "sub.csv").mkdir()
    assert main(["check-config", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert f"models[1].reference.path: no such file: {tmp_path / 'missing.csv'}" in err
    assert "models[2].reference.path: is a directory" in err
    assert "models[0]" not in err
    # relative to the configuration file, not to the working directory
    (tmp_path / "missing.csv").write_text(rows)
    (tmp_path / "sub.csv").rmdir()
    (tmp_path / "sub.csv").write_text(rows)
    assert main(["check-config", "--config", str(cfg)]) == 0


def test_init_names_a_reference_outside_the_config_directory_absolutely(tmp_path):
    ref = tmp_path / "data" / "ref.csv"
    ref.parent.mkdir()
    ref.write_text("x,prediction,label\n1,0.5,0\n2,0.4,1\n")
    out = tmp_path / "deploy" / "conf" / "driftline.yaml"  # ../../data/ref.csv: too far
    out.parent.mkdir(parents=True)
    assert main(["init", "--reference", str(ref), "--model", "m", "--output", str(out)]) == 0
    config = load_config(out)
    assert config.models[0].reference.path == str(ref.resolve())
    assert config.kafka.consumer == {"max_poll_interval_ms": 10000}
    assert main(["check-config", "--config", str(out)]) == 0


def test_check_config_loads_every_reference_and_names_the_key(tmp_path, capsys):
    (tmp_path / "bad.csv").write_text("x,prediction\n1,2,3\n")
    (tmp_path / "empty.csv").write_text("x,prediction\n")
    cfg = tmp_path / "driftline.yaml"
    cfg.write_text(
        "models:\n"
        "  - {name: a, reference: {path: bad.csv}}\n"
        "  - {name: b, reference: {path: empty.csv}}\n"
    )
    assert main(["check-config", "--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert "models[0].reference.path: " in err
    assert "bad.csv: cannot read reference data" in err
    assert "models[1].reference.path: the reference has no rows" in err
