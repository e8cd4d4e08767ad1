"""Configuration: the documented defaults, one clear error per mistake, environment overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.configfile import ConfigError, dump_config, load_config, resolve_secret
from monitor.config import DriftlineConfig, parse_cron, parse_duration

MINIMAL = "models:\n  - name: fraud\n    reference: {path: ref.csv}\n"
TARGET = "    target: {type: http, url: 'http://ci/retrain'}\n"


def write(tmp_path: Path, text: str, name: str = "driftline.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def error_of(path: Path, environ: dict[str, str] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ={} if environ is None else environ)
    return info.value


# -- defaults ----------------------------------------------------------------------------------


def test_minimal_config_has_design_defaults(tmp_path):
    c = load_config(write(tmp_path, MINIMAL), environ={})
    k = c.kafka
    assert (k.bootstrap_servers, k.group_id) == ("localhost:9092", "driftline")
    assert k.predictions_topic == "driftline.predictions"
    assert k.ground_truth_topic == "driftline.ground-truth"
    assert k.dead_letter_topic == "driftline.dead-letter"
    assert (k.consumer, k.producer, k.sasl_password_env) == ({}, {}, None)
    assert (k.max_batch, k.poll_timeout_ms) == (10_000, 500)
    assert (c.http.host, c.http.port) == ("0.0.0.0", 9108)
    assert (c.windows.pane, c.windows.size, c.windows.allowed_lateness) == (60, 3600, 300)
    assert (c.state.dir, c.state.kafka_topic, c.state.checkpoint_interval) == ("./state", None, 30)
    assert c.state.keep == 3
    assert (c.alerts.rules, c.alerts.sinks, c.retraining) == ([], [], [])
    m = c.models[0]
    assert (m.name, m.task, m.positive_label) == ("fraud", "binary_classification", None)
    assert (m.decision_threshold, m.reference.path, m.reference.from_stream) == (
        0.5,
        "ref.csv",
        None,
    )
    assert m.features == {}
    assert (m.drift.numerical.method, m.drift.numerical.threshold) == ("wasserstein", "auto")
    assert (m.drift.categorical.method, m.drift.categorical.threshold) == ("jensenshannon", "auto")
    assert (m.drift.false_alarm_rate, m.drift.numerical.min_effect) == (0.01, None)
    assert m.drift.numerical.report == ("psi", "ks")
    assert m.drift.categorical.report == ("psi", "chisquare")
    assert (m.drift.min_events, m.drift.overrides) == (100, {})
    assert (m.binning.quantiles, m.binning.coarse_bins, m.binning.max_categories) == (100, 10, 50)


def test_an_empty_file_only_lacks_models(tmp_path):
    err = error_of(write(tmp_path, ""))
    assert (err.key, err.reason) == ("models", "required key is missing")


DESIGN_EXAMPLE = """
kafka:
  bootstrap_servers: localhost:9092
  group_id: driftline
  predictions_topic: driftline.predictions
  ground_truth_topic: driftline.ground-truth
  dead_letter_topic: driftline.dead-letter
  consumer: {max_poll_interval_ms: 10000}
  producer: {}
http: {host: 0.0.0.0, port: 9108}
windows:
  pane: 60s
  size: 1h
  allowed_lateness: 5m
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

RICHER = """
state: {kafka_topic: driftline.state, checkpoint_interval: 500ms}
windows: {pane: 30s, size: 2h}
models:
  - name: churn.v2
    task: multiclass_classification
    reference: {from_stream: {events: 10000}}
    features: {plan: {type: categorical}, tenure: {type: numerical, bounds: [0, 120]}}
    drift:
      categorical: {method: chisquare, threshold: 0.01, report: [psi, hellinger]}
      overrides: {tenure: {method: ks, threshold: 0.05}}
    binning: {quantiles: 200, coarse_bins: 20, max_categories: 500}
alerts:
  rules:
    - {alert: Slow, metric: driftline_window_events, op: "<", threshold: 10, for: 10m}
  sinks:
    - {name: am, type: alertmanager, url: "http://am:9093", timeout: 2s, send_resolved: false}
retraining:
  - model: churn.v2
    on_alerts: [Slow]
    schedule: "*/30 2-4 1,15 jan-jun mon-fri"
    target:
      type: github
      url: https://api.github.com
      repo: acme/churn
      token_env: GH_TOKEN
  - model: churn.v2
    schedule: "0 0 * * 7"
    target: {type: airflow, url: "http://airflow:8080", dag_id: retrain_churn}
"""


@pytest.mark.parametrize(
    "text", [MINIMAL, DESIGN_EXAMPLE, RICHER], ids=["minimal", "design", "rich"]
)
def test_dump_round_trips(tmp_path, text):
    c = load_config(write(tmp_path, text), environ={})
    dumped = dump_config(c)
    assert load_config(write(tmp_path, dumped, "dumped.yaml"), environ={}) == c


def test_the_design_example_means_what_it_says(tmp_path):
    c = load_config(write(tmp_path, DESIGN_EXAMPLE), environ={})
    rule = c.alerts.rules[0]
    assert (rule.for_, rule.keep_firing_for, rule.match) == (0, 300, {"model": "fraud"})
    assert c.alerts.sinks[0].timeout == 10
    assert c.retraining[0].cooldown == 6 * 3600
    assert c.models[0].drift.overrides["amount"].threshold == 0.2
    dumped = dump_config(c)
    assert "for: 0.0" in dumped
    assert "for_" not in dumped


def test_a_kafka_topic_store_needs_no_dir(tmp_path):
    c = load_config(write(tmp_path, RICHER), environ={})
    assert (c.state.dir, c.state.kafka_topic, c.state.checkpoint_interval) == (
        None,
        "driftline.state",
        0.5,
    )


# -- mistakes: each names the file, the exact key path and why --------------------------------

MISTAKES = [
    ("unknown top-level key", MINIMAL + "colour: blue\n", "colour", "unknown key"),
    ("misspelt section", MINIMAL + "kafak: {}\n", "kafak", "did you mean 'kafka'"),
    (
        "typo in a nested key",
        MINIMAL + "    drift: {numerical: {method: psi, treshold: 0.2}}\n",
        "models[0].drift.numerical.treshold",
        "did you mean 'threshold'",
    ),
    ("wrong type", MINIMAL + "http: {port: abc}\n", "http.port", "valid integer"),
    ("port out of range", MINIMAL + "http: {port: 99999}\n", "http.port", "65535"),
    ("bad duration", MINIMAL + "windows: {pane: 5x}\n", "windows.pane", "invalid duration '5x'"),
    (
        "negative lateness",
        MINIMAL + "windows: {allowed_lateness: -5m}\n",
        "windows.allowed_lateness",
        "invalid duration",
    ),
    (
        "size not a multiple of the pane",
        MINIMAL + "windows: {pane: 7s, size: 1m}\n",
        "windows.size",
        "whole multiple of pane",
    ),
    ("both state stores", MINIMAL + "state: {dir: s, kafka_topic: t}\n", "state", "exactly one"),
    (
        "a numerical segment field",
        MINIMAL + "    features: {amount: {type: numerical}}\n    segments: [amount]\n",
        "models[0].segments.0",
        "amount is numerical",
    ),
    (
        "a segment field that is no feature",
        MINIMAL + "    features: {country: {type: categorical}}\n    segments: [region]\n",
        "models[0].segments.0",
        "or write tags.region",
    ),
    (
        "a segment field named twice",
        MINIMAL + "    segments: [tags.region, tags.region]\n",
        "models[0].segments",
        "named twice",
    ),
    (
        "a tag segment without a name",
        MINIMAL + "    segments: [tags.]\n",
        "models[0].segments[0]",
        "is not a feature name or tags.NAME",
    ),
    (
        "top_k of 0",
        MINIMAL + "    segments: [tags.region]\n    segmenting: {top_k: 0}\n",
        "models[0].segmenting.top_k",
        "greater than or equal to 1",
    ),
    ("no models", "kafka: {}\n", "models", "missing"),
    ("an empty list of models", "models: []\n", "models", "at least 1"),
    (
        "unknown drift method",
        MINIMAL + "    drift: {numerical: {method: entropy, threshold: 0.1}}\n",
        "models[0].drift.numerical.method",
        "'psi'",
    ),
    (
        "ks for categorical features",
        MINIMAL + "    drift: {categorical: {method: ks, threshold: 0.05}}\n",
        "models[0].drift.categorical.method",
        "needs ordered values",
    ),
    (
        "wasserstein reported for categorical features",
        MINIMAL
        + "    drift: {categorical: {method: psi, threshold: 0.1, report: [kl, wasserstein]}}\n",
        "models[0].drift.categorical.report[1]",
        "needs ordered values",
    ),
    (
        "a p-value threshold of 1 or more",
        MINIMAL + "    drift: {numerical: {method: ks, threshold: 5}}\n",
        "models[0].drift.numerical.threshold",
        "p-value",
    ),
    (
        "ks overriding a categorical feature",
        MINIMAL
        + "    features: {c: {type: categorical}}\n    drift: {overrides: {c: {method: ks}}}\n",
        "models[0].drift.overrides.c.method",
        "c is categorical",
    ),
    (
        "an override for a feature not in features",
        MINIMAL
        + "    features: {amount: {type: numerical}}\n"
        + "    drift: {overrides: {amout: {threshold: 0.2}}}\n",
        "models[0].drift.overrides.amout",
        "no feature 'amout'",
    ),
    (
        "both path and from_stream",
        "models:\n  - name: m\n    reference: {path: a.csv, from_stream: {events: 10}}\n",
        "models[0].reference",
        "exactly one of 'path' or 'from_stream'",
    ),
    ("no reference", "models:\n  - name: m\n", "models[0].reference", "missing"),
    (
        "duplicate model names",
        MINIMAL + "  - name: fraud\n    reference: {path: b.csv}\n",
        "models[1].name",
        "duplicate name 'fraud'",
    ),
    (
        "a bad model name",
        "models:\n  - name: 'a b'\n    reference: {path: r.csv}\n",
        "models[0].name",
        "is not a name",
    ),
    (
        "bounds reversed",
        MINIMAL + "    features: {x: {type: numerical, bounds: [5, 1]}}\n",
        "models[0].features.x.bounds",
        "low < high",
    ),
    (
        "coarse bins above quantiles",
        MINIMAL + "    binning: {quantiles: 20, coarse_bins: 30}\n",
        "models[0].binning.coarse_bins",
        "must not exceed quantiles",
    ),
    (
        "a positive label on a regression",
        "models:\n  - {name: m, task: regression, positive_label: y, reference: {path: r}}\n",
        "models[0].positive_label",
        "binary_classification only",
    ),
    (
        "a password in the Kafka client settings",
        MINIMAL + "kafka: {producer: {sasl_plain_password: hunter2}}\n",
        "kafka.producer.sasl_plain_password",
        "sasl_password_env",
    ),
    (
        "an alert on a metric that is not ours",
        MINIMAL + "alerts:\n  rules:\n    - {alert: A, metric: up, threshold: 1}\n",
        "alerts.rules[0].metric",
        "not a driftline metric",
    ),
    (
        "a rule on a per-instance counter",
        MINIMAL
        + "alerts:\n  rules:\n"
        + "    - {alert: A, metric: driftline_events_invalid_total, threshold: 1}\n",
        "alerts.rules[0].metric",
        "per instance: alert on their sum with a Prometheus rule",
    ),
    (
        "a misspelt `for`",
        MINIMAL
        + "alerts:\n  rules:\n    - {alert: A, metric: driftline_x, threshold: 1, fro: 5m}\n",
        "alerts.rules[0].fro",
        "did you mean 'for'",
    ),
    (
        "a sink URL that is not http",
        MINIMAL + "alerts:\n  sinks:\n    - {name: s, type: webhook, url: 'ftp://x'}\n",
        "alerts.sinks[0].url",
        "not an http:// or https:// URL",
    ),
    (
        "a secret where its variable name belongs",
        MINIMAL
        + "alerts:\n  sinks:\n"
        + "    - {name: s, type: slack, url: 'https://x', secret_env: 'pa$$ word'}\n",
        "alerts.sinks[0].secret_env",
        "never the secret itself",
    ),
    (
        "duplicate sink names",
        MINIMAL + "alerts:\n  sinks:\n    - {name: s, type: slack, url: 'https://x'}\n"
        "    - {name: s, type: webhook, url: 'https://y'}\n",
        "alerts.sinks[1].name",
        "duplicate name 's'",
    ),
    (
        "a vertex pipeline spec that is no URI",
        MINIMAL + "retraining:\n  - model: fraud\n    schedule: '0 3 * * *'\n"
        "    target: {type: vertex, project: my-project, region: us-central1,\n"
        "             template_uri: spec.json, token_env: GCP_TOKEN}\n",
        "retraining[0].target.template_uri",
        "is not a gs:// or https:// pipeline spec URI",
    ),
    (
        "a vertex pipeline root outside Cloud Storage",
        MINIMAL + "retraining:\n  - model: fraud\n    schedule: '0 3 * * *'\n"
        "    target: {type: vertex, project: my-project, region: us-central1,\n"
        "             template_uri: 'gs://b/spec.json', pipeline_root: /tmp/x,\n"
        "             token_env: GCP_TOKEN}\n",
        "retraining[0].target.pipeline_root",
        "is not a gs:// URI",
    ),
    (
        "retraining for an unknown model",
        MINIMAL + "retraining:\n  - model: nope\n    schedule: '0 3 * * *'\n" + TARGET,
        "retraining[0].model",
        "unknown model 'nope'",
    ),
    (
        "retraining on an unknown alert",
        MINIMAL + "retraining:\n  - model: fraud\n    on_alerts: [Nope]\n" + TARGET,
        "retraining[0].on_alerts[0]",
        "unknown alert rule 'Nope'",
    ),
    (
        "retraining that never fires",
        MINIMAL + "retraining:\n  - model: fraud\n" + TARGET,
        "retraining[0]",
        "never fires",
    ),
    (
        "a cron hour out of range",
        MINIMAL + "retraining:\n  - model: fraud\n    schedule: '0 25 * * *'\n" + TARGET,
        "retraining[0].schedule",
        "cron hour field '25'",
    ),
    (
        "a cron with six fields",
        MINIMAL + "retraining:\n  - model: fraud\n    schedule: '0 0 3 * * 0'\n" + TARGET,
        "retraining[0].schedule",
        "must have 5 fields",
    ),
    (
        "a cron macro",
        MINIMAL + "retraining:\n  - model: fraud\n    schedule: '@daily'\n" + TARGET,
        "retraining[0].schedule",
        "must have 5 fields",
    ),
    (
        "an airflow target without dag_id",
        MINIMAL
        + "retraining:\n  - model: fraud\n    schedule: '0 3 * * *'\n"
        + "    target: {type: airflow, url: 'http://x/'}\n",
        "retraining[0].target.dag_id",
        "needs dag_id",
    ),
    (
        "a vertex target without credentials",
        MINIMAL + "retraining:\n  - model: fraud\n    schedule: '0 3 * * *'\n"
        "    target: {type: vertex, project: my-project, region: us-central1,\n"
        "             template_uri: 'gs://b/spec.json'}\n",
        "retraining[0].target.credentials",
        "needs credentials: google (tokens refreshed from Application Default Credentials)",
    ),
    (
        "a vertex target with two kinds of credentials",
        MINIMAL + "retraining:\n  - model: fraud\n    schedule: '0 3 * * *'\n"
        "    target: {type: vertex, project: my-project, region: us-central1,\n"
        "             template_uri: 'gs://b/spec.json', token_env: T, credentials: google}\n",
        "retraining[0].target.credentials",
        "or token_env, not both",
    ),
    (
        "google credentials on another target",
        MINIMAL + "retraining:\n  - model: fraud\n    schedule: '0 3 * * *'\n"
        "    target: {type: http, url: 'https://x/', credentials: google}\n",
        "retraining[0].target.credentials",
        "applies to vertex targets only, not http",
    ),
    (
        "a github target without a token",
        MINIMAL
        + "retraining:\n  - model: fraud\n    schedule: '0 3 * * *'\n"
        + "    target: {type: github, url: 'https://api.github.com', repo: acme/fraud}\n",
        "retraining[0].target.token_env",
        "needs token_env",
    ),
]


@pytest.mark.parametrize(("what", "text", "key", "reason"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_each_mistake_names_file_key_and_reason(tmp_path, what, text, key, reason):
    path = write(tmp_path, text)
    err = error_of(path)
    assert err.file == str(path)
    assert err.key == key, str(err)
    assert reason in err.reason, str(err)
    assert str(err).splitlines()[0] == f"{path}: {key}: {err.reason}"


def test_every_validation_problem_is_listed_one_per_line(tmp_path):
    path = write(tmp_path, MINIMAL + "http: {port: abc}\nwindows: {pane: 5x}\ncolour: red\n")
    err = error_of(path)
    lines = str(err).splitlines()
    assert len(lines) == len(err.problems) == 3
    assert lines[0] == f"{path}: colour: {err.reason}"  # the typo is the headline
    assert {k for k, _ in err.problems} == {"colour", "http.port", "windows.pane"}
    assert all(line.startswith(f"{path}: ") for line in lines)


FILE_MISTAKES = [
    (
        "YAML syntax error",
        "models:\n  - name: m\n    reference: {path: [\n",
        "invalid YAML at line 4",
    ),
    ("a key given twice", MINIMAL + "http: {port: 1}\nhttp: {port: 2}\n", "duplicate key 'http'"),
    ("the top level a list", "- a\n- b\n", "top level must be a mapping of sections, got list"),
    ("the top level a scalar", "42\n", "top level must be a mapping of sections, got int"),
]


@pytest.mark.parametrize(
    ("what", "text", "reason"), FILE_MISTAKES, ids=[m[0] for m in FILE_MISTAKES]
)
def test_file_level_mistakes_name_the_file(tmp_path, what, text, reason):
    path = write(tmp_path, text)
    err = error_of(path)
    assert (err.file, err.key) == (str(path), "")
    assert reason in err.reason, str(err)
    assert str(err) == f"{path}: {err.reason}"


def test_yaml_syntax_error_gives_line_and_column(tmp_path):
    path = write(tmp_path, "models:\n  - name: m\n   bad indent: [\n")
    err = error_of(path)
    assert "line 3, column 4" in err.reason, str(err)


def test_missing_file(tmp_path):
    path = tmp_path / "absent.yaml"
    err = error_of(path)
    assert (err.file, err.key, err.reason) == (str(path), "", "no such file")


def test_a_directory_is_not_a_config_file(tmp_path):
    err = error_of(tmp_path)
    assert (err.file, err.key) == (str(tmp_path), "")
    assert "cannot read" in err.reason


def test_merge_keys_may_override_what_they_bring(tmp_path):
    text = MINIMAL + "http:\n  <<: {port: 1, host: h}\n  port: 2\n"
    c = load_config(write(tmp_path, text), environ={})
    assert (c.http.host, c.http.port) == ("h", 2)


# -- environment overrides ---------------------------------------------------------------------


def test_environment_overrides_win_over_the_file(tmp_path):
    path = write(tmp_path, MINIMAL + "http: {port: 9000}\nkafka: {bootstrap_servers: file:9092}\n")
    c = load_config(
        path,
        environ={
            "DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS": "broker-1:9092,broker-2:9092",
            "DRIFTLINE_HTTP_PORT": "9109",
            "DRIFTLINE_WINDOWS_PANE": "30s",
            "DRIFTLINE_TEST_BOOTSTRAP_SERVERS": "not a section of ours: ignored",
            "PATH": "/bin",
        },
    )
    assert c.kafka.bootstrap_servers == "broker-1:9092,broker-2:9092"
    assert c.http.port == 9109
    assert c.windows.pane == 30


def test_overrides_are_parsed_by_the_type_of_their_setting(tmp_path):
    env = {
        "DRIFTLINE_KAFKA_GROUP_ID": "0123",  # a string setting stays a string
        "DRIFTLINE_KAFKA_MAX_BATCH": "500",
        "DRIFTLINE_KAFKA_CONSUMER": "{max_poll_interval_ms: 5000}",
        "DRIFTLINE_STATE_KAFKA_TOPIC": "driftline.state",  # replaces the default dir
        "DRIFTLINE_VALIDATION_MAX_AGE": "2d",
    }
    c = load_config(write(tmp_path, MINIMAL), environ=env)
    assert (c.kafka.group_id, c.kafka.max_batch) == ("0123", 500)
    assert c.kafka.consumer == {"max_poll_interval_ms": 5000}
    assert (c.state.dir, c.state.kafka_topic) == (None, "driftline.state")
    assert c.validation.max_age == 2 * 86400


def test_switching_the_state_store_from_the_environment(tmp_path):
    path = write(tmp_path, MINIMAL + "state: {dir: ./state}\n")
    env = {"DRIFTLINE_STATE_KAFKA_TOPIC": "driftline.state"}
    err = error_of(path, env)
    assert err.key == "state"
    assert err.reason.endswith("(set by DRIFTLINE_STATE_KAFKA_TOPIC)")
    c = load_config(path, environ={**env, "DRIFTLINE_STATE_DIR": "null"})
    assert (c.state.dir, c.state.kafka_topic) == (None, "driftline.state")


def test_unknown_environment_override_is_an_error_naming_the_variable(tmp_path):
    err = error_of(write(tmp_path, MINIMAL), {"DRIFTLINE_KAFKA_BOOTSTRAP": "x"})
    assert (err.file, err.key) == ("DRIFTLINE_KAFKA_BOOTSTRAP", "kafka.bootstrap")
    assert err.reason == "no such setting; did you mean DRIFTLINE_KAFKA_BOOTSTRAP_SERVERS?"


def test_a_secret_variable_is_not_an_override(tmp_path):
    path = write(tmp_path, MINIMAL + "kafka: {sasl_password_env: DRIFTLINE_KAFKA_SASL_PASSWORD}\n")
    c = load_config(path, environ={"DRIFTLINE_KAFKA_SASL_PASSWORD": "hunter2"})
    assert c.kafka.sasl_password_env == "DRIFTLINE_KAFKA_SASL_PASSWORD"
    assert "hunter2" not in dump_config(c)


def test_an_override_is_validated_like_the_file_and_named(tmp_path):
    err = error_of(write(tmp_path, MINIMAL), {"DRIFTLINE_HTTP_PORT": "-1"})
    assert (err.key, err.file) == ("http.port", str(tmp_path / "driftline.yaml"))
    assert err.reason.endswith("(set by DRIFTLINE_HTTP_PORT)")


def test_resolve_secret():
    env = {"HOOK_SECRET": "s3cr3t", "EMPTY": ""}
    assert resolve_secret("HOOK_SECRET", env) == "s3cr3t"
    assert resolve_secret(None, env) is None
    for name in ("MISSING", "EMPTY"):
        with pytest.raises(ConfigError) as info:
            resolve_secret(name, env)
        assert (info.value.file, info.value.key) == (name, "")
        assert "unset or empty" in info.value.reason


# -- the parsers ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("60s", 60),
        ("5m", 300),
        ("1h", 3600),
        ("7d", 604800),
        ("1.5h", 5400),
        ("90", 90),
        (90, 90),
        (0.25, 0.25),
        ("0s", 0),
        (" 2 m ", 120),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "bad", ["5x", "", "m", "-1s", "1e3", "5 min", -1, float("nan"), True, None]
)
def test_parse_duration_refuses(bad):
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(bad)


@given(st.integers(0, 10**9), st.sampled_from(["ms", "s", "m", "h", "d", ""]))
def test_parse_duration_scales_by_its_unit(n, unit):
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "": 1}[unit]
    assert parse_duration(f"{n}{unit}") == pytest.approx(n * factor)


@pytest.mark.parametrize(
    ("expr", "field", "values"),
    [
        ("* * * * *", 0, set(range(60))),
        ("*/20 * * * *", 0, {0, 20, 40}),
        ("5/20 * * * *", 0, {5, 25, 45}),
        ("0 1-3,22 * * *", 1, {1, 2, 3, 22}),
        ("0 0 1 feb-apr/2 *", 3, {2, 4}),
        ("0 0 * * sun,7,6", 4, {0, 6}),
        ("0 0 * * MON-fri", 4, {1, 2, 3, 4, 5}),
    ],
)
def test_parse_cron(expr, field, values):
    assert parse_cron(expr)[field] == values


@pytest.mark.parametrize(
    ("expr", "reason"),
    [
        ("0 3 * *", "5 fields"),
        ("60 * * * *", "minute field '60'"),
        ("* * 0 * *", "day of month field '0'"),
        ("* * * 13 *", "month field '13'"),
        ("* * * * 8", "day of week field '8'"),
        ("5-1 * * * *", "reversed"),
        ("*/0 * * * *", "step"),
        ("x * * * *", "'x' is not a number"),
        ("1,,2 * * * *", "not a number"),
    ],
)
def test_parse_cron_refuses(expr, reason):
    with pytest.raises(ValueError, match=reason):
        parse_cron(expr)


def test_the_models_are_frozen():
    c = DriftlineConfig.model_validate({"models": [{"name": "m", "reference": {"path": "r"}}]})
    with pytest.raises(ValueError, match="frozen"):
        c.http.port = 1  # type: ignore[misc]


# -- the CLI's view of the same mistakes ------------------------------------------------------


@pytest.mark.parametrize(("what", "text", "key", "reason"), MISTAKES, ids=[m[0] for m in MISTAKES])
def test_check_config_exits_2_with_the_same_headline(tmp_path, capsys, what, text, key, reason):
    from consumers.cli import main

    path = write(tmp_path, text)
    assert main(["check-config", "--config", str(path)]) == 2
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith(f"driftline: configuration error: {path}: {key}: ")
    assert reason in first
