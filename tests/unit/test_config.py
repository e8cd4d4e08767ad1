"""Configuration: DESIGN.md defaults, one clear error per mistake, environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.configfile import ConfigError, dump_config, load_config

MINIMAL = "models:\n  - name: fraud\n    reference: {path: ref.csv}\n"


def write(tmp_path: Path, text: str, name: str = "driftline.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_minimal_config_has_design_defaults(tmp_path):
    c = load_config(write(tmp_path, MINIMAL), environ={})
    assert c.kafka.bootstrap_servers == "localhost:9092"
    assert c.kafka.group_id == "driftline"
    assert c.kafka.predictions_topic == "driftline.predictions"
    assert c.kafka.ground_truth_topic == "driftline.ground-truth"
    assert c.kafka.dead_letter_topic == "driftline.dead-letter"
    assert (c.http.host, c.http.port) == ("0.0.0.0", 9108)
    assert (c.windows.pane, c.windows.size, c.windows.allowed_lateness) == (60, 3600, 300)
    assert c.state.dir == "./state"
    m = c.models[0]
    assert m.task == "binary_classification"
    assert (m.drift.numerical.method, m.drift.numerical.threshold) == ("wasserstein", 0.1)
    assert (m.drift.categorical.method, m.drift.categorical.threshold) == ("jensenshannon", 0.1)
    assert m.drift.numerical.report == ("psi", "ks")
    assert m.drift.categorical.report == ("psi", "chisquare")
    assert m.drift.min_events == 100


DESIGN_EXAMPLE = """
kafka:
  bootstrap_servers: localhost:9092
  group_id: driftline
  consumer: {max_poll_interval_ms: 10000}
  producer: {}
http: {host: 0.0.0.0, port: 9108}
windows: {pane: 60s, size: 1h, allowed_lateness: 5m}
state: {dir: ./state}
models:
  - name: fraud
    task: binary_classification
    positive_label: fraud
    reference: {path: data/fraud_reference.parquet}
    features:
      amount: {type: numerical}
      country: {type: categorical}
    drift:
      numerical: {method: wasserstein, threshold: 0.1}
      categorical: {method: jensenshannon, threshold: 0.1}
      min_events: 100
      overrides: {amount: {method: psi, threshold: 0.2}}
alerts:
  rules:
    - alert: FeatureDrift
      metric: driftline_feature_drifted
      match: {model: fraud}
      op: ">="
      threshold: 1
      for: 0s
      keep_firing_for: 5m
      severity: warning
      annotations: {summary: "{{ feature }} drifted on {{ model }}"}
  sinks:
    - name: ops
      type: webhook
      url: https://hooks.example.com/driftline
      secret_env: DRIFTLINE_OPS_SECRET
      send_resolved: true
retraining:
  - model: fraud
    on_alerts: [FeatureDrift]
    cooldown: 6h
    max_per_day: 2
    schedule: "0 3 * * 0"
    target: {type: http, url: https://ci.example.com/retrain, secret_env: DRIFTLINE_RETRAIN_SECRET}
"""


def test_the_design_example_is_valid_and_round_trips(tmp_path):
    c = load_config(write(tmp_path, DESIGN_EXAMPLE), environ={})
    assert c.alerts.rules[0].for_ == 0
    assert c.alerts.rules[0].keep_firing_for == 300
    assert c.retraining[0].cooldown == 6 * 3600
    again = load_config(write(tmp_path, dump_config(c), "dumped.yaml"), environ={})
    assert again == c


MISTAKES = [
    ("unknown top-level key", MINIMAL + "colour: blue\n", "colour", "unknown key"),
    (
        "typo in a nested key",
        MINIMAL + "    drift: {numerical: {method: psi, treshold: 0.2}}\n",
        "models[0].drift.numerical.treshold",
        "unknown key",
    ),
    ("wrong type", MINIMAL + "http: {port: abc}\n", "http.port", "integer"),
    ("port out of range", MINIMAL + "http: {port: 99999}\n", "http.port", "65535"),
    ("bad duration", MINIMAL + "windows: {pane: 5x}\n", "windows.pane", "invalid duration"),
    (
        "size not a multiple of the pane",
        MINIMAL + "windows: {pane: 7s, size: 1m}\n",
        "windows.size",
        "whole multiple",
    ),
    (
        "unknown drift method",
        MINIMAL + "    drift: {numerical: {method: entropy, threshold: 0.1}}\n",
        "models[0].drift.numerical.method",
        "psi",
    ),
    (
        "ks for a categorical feature",
        MINIMAL + "    drift: {categorical: {method: ks, threshold: 0.05}}\n",
        "models[0].drift.categorical.method",
        "ordered values",
    ),
    (
        "p-value threshold of 1 or more",
        MINIMAL + "    drift: {numerical: {method: ks, threshold: 5}}\n",
        "models[0].drift.numerical",
        "p-value",
    ),
    (
        "both path and from_stream",
        "models:\n  - name: m\n    reference: {path: a.csv, from_stream: {events: 10}}\n",
        "models[0].reference",
        "exactly one",
    ),
    ("no reference", "models:\n  - name: m\n", "models[0].reference", "missing"),
    ("no models", "kafka: {}\n", "models", "missing"),
    (
        "duplicate model names",
        MINIMAL + "  - name: fraud\n    reference: {path: b.csv}\n",
        "models[1].name",
        "duplicate",
    ),
    (
        "retraining for an unknown model",
        MINIMAL + "retraining:\n  - model: nope\n    target: {type: http, url: http://x/}\n",
        "retraining[0].model",
        "unknown model",
    ),
    (
        "retraining on an unknown alert",
        MINIMAL
        + "retraining:\n  - model: fraud\n    on_alerts: [Nope]\n"
        + "    target: {type: http, url: http://x/}\n",
        "retraining[0].on_alerts[0]",
        "unknown alert",
    ),
    (
        "bad cron",
        MINIMAL
        + "retraining:\n  - model: fraud\n    schedule: '0 25 * * *'\n"
        + "    target: {type: http, url: http://x/}\n",
        "retraining[0].schedule",
        "hour",
    ),
    (
        "airflow target without dag_id",
        MINIMAL + "retraining:\n  - model: fraud\n    target: {type: airflow, url: http://x/}\n",
        "retraining[0].target",
        "dag_id",
    ),
    (
        "a sink URL that is not http",
        MINIMAL + "alerts:\n  sinks:\n    - {name: s, type: webhook, url: ftp://x}\n",
        "alerts.sinks[0].url",
        "pattern",
    ),
    (
        "bounds reversed",
        MINIMAL + "    features: {x: {type: numerical, bounds: [5, 1]}}\n",
        "models[0].features.x",
        "low < high",
    ),
    (
        "a bad model name",
        "models:\n  - name: 'a b'\n    reference: {path: r.csv}\n",
        "models[0].name",
        "pattern",
    ),
]


@pytest.mark.parametrize(("what", "text", "key", "reason"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_each_mistake_names_file_key_and_reason(tmp_path, what, text, key, reason):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={})
    err = info.value
    assert err.file == str(path)
    assert err.key == key, str(err)
    assert reason in err.reason, str(err)
    assert str(err).startswith(f"{path}: {key}: ")


def test_yaml_syntax_error_names_line(tmp_path):
    path = write(tmp_path, "models:\n  - name: m\n    reference: {path: [\n")
    with pytest.raises(ConfigError, match=r"line \d+, column \d+") as info:
        load_config(path, environ={})
    assert info.value.file == str(path)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.yaml", environ={})
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(write(tmp_path, "- a\n- b\n"), environ={})


def test_environment_overrides_win(tmp_path):
    path = write(tmp_path, MINIMAL + "http: {port: 9000}\n")
    c = load_config(
        path,
        environ={
            "DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS": "broker-1:9092,broker-2:9092",
            "DRIFTLINE_HTTP_PORT": "9109",
            "DRIFTLINE_WINDOWS_PANE": "30s",
            "DRIFTLINE_TEST_BOOTSTRAP_SERVERS": "ignored: not a config section",
        },
    )
    assert c.kafka.bootstrap_servers == "broker-1:9092,broker-2:9092"
    assert c.http.port == 9109
    assert c.windows.pane == 30


def test_unknown_environment_override_is_an_error(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, MINIMAL), environ={"DRIFTLINE_KAFKA_BOOTSTRAP": "x"})
    assert info.value.file == "DRIFTLINE_KAFKA_BOOTSTRAP"
    assert "no such setting" in info.value.reason


def test_an_override_is_validated_like_the_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, MINIMAL), environ={"DRIFTLINE_HTTP_PORT": "-1"})
    assert info.value.key == "http.port"


@pytest.mark.parametrize(("what", "text", "key", "reason"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_check_config_exits_2_with_one_clear_message(tmp_path, capsys, what, text, key, reason):
    from consumers.cli import main

    path = write(tmp_path, text)
    assert main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    first = err.splitlines()[0]
    assert first.startswith(f"driftline: configuration error: {path}: {key}: ")
    assert reason in first
