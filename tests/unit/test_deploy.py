"""The deployable stack: Prometheus rules (promtool), Alertmanager (amtool), the
PrometheusRule, docker-compose, Kubernetes manifests and the Dockerfile agree with each
other and with the service. No Docker engine or cluster is needed: what can run here
(promtool, amtool) runs; the rest is checked for syntax and consistency."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from consumers.configfile import load_config

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
KUBERNETES = DEPLOY / "kubernetes"
RULE_FILES = [PROMETHEUS / "recording_rules.yml", PROMETHEUS / "alert_rules.yml"]
RULE_TESTS = sorted((PROMETHEUS / "tests").glob("*.yml"))
YAML_FILES = sorted(
    p
    for base in (DEPLOY, ROOT / "grafana" / "provisioning")
    for p in base.rglob("*")
    if p.suffix in (".yml", ".yaml")
)


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed: apt-get install {package}")
    return path


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def _alerts() -> dict[str, dict[str, Any]]:
    groups = _load(PROMETHEUS / "alert_rules.yml")["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"]}


def _documents(path: Path) -> list[Any]:
    return list(yaml.safe_load_all(path.read_text(encoding="utf-8")))


def _kubernetes(kind: str) -> dict[str, Any]:
    kustomization = _load(KUBERNETES / "kustomization.yaml")
    found = [
        doc
        for resource in kustomization["resources"]
        for doc in _documents(KUBERNETES / resource)
        if doc["kind"] == kind
    ]
    assert len(found) == 1, kind
    return found[0]


# -- syntax ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_yaml_parses(path):
    assert all(doc is not None for doc in _documents(path))


# -- Prometheus rules and configuration --------------------------------------------------


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: p.name)
def test_promtool_check_rules(path):
    promtool = _tool("promtool", "prometheus")
    result = _run(promtool, "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules():
    promtool = _tool("promtool", "prometheus")
    assert RULE_TESTS
    result = _run(promtool, "test", "rules", *map(str, RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_config():
    promtool = _tool("promtool", "prometheus")
    # rule_files are relative to the configuration, so it is checked where it lives
    result = _run(promtool, "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 rule files found" in result.stdout


def test_amtool_check_config():
    amtool = _tool("amtool", "prometheus-alertmanager")
    result = _run(amtool, "check-config", str(DEPLOY / "alertmanager" / "alertmanager.yml"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_not_firing():
    firing: set[str] = set()
    silent: set[str] = set()
    for path in RULE_TESTS:
        for test in _load(path)["tests"]:
            for case in test.get("alert_rule_test", []):
                (firing if case["exp_alerts"] else silent).add(case["alertname"])
    assert firing == set(_alerts()), "alerts never tested firing"
    assert silent == set(_alerts()), "alerts never tested silent"


def test_rule_tests_fix_the_group_order():
    groups = [g["name"] for p in RULE_FILES for g in _load(p)["groups"]]
    for path in RULE_TESTS:
        # groups left out run in random order: alerts on recorded series would be flaky
        test = _load(path)
        if "alert_rule_test" in str(test):
            assert test["group_eval_order"] == groups, path.name


def test_alerts_have_severity_and_annotations():
    for name, rule in _alerts().items():
        assert name.startswith("Driftline")
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert {"summary", "description"} <= set(rule["annotations"]), name


def test_recording_rules_are_named_level_metric_operations():
    for group in _load(PROMETHEUS / "recording_rules.yml")["groups"]:
        for rule in group["rules"]:
            assert re.fullmatch(r"[a-z_]+:driftline_[a-z0-9_]+:[a-z0-9_]+", rule["record"])


def test_alert_rules_select_the_scrape_job():
    config = _load(PROMETHEUS / "prometheus.yml")
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    # every replica of the compose service `driftline` is scraped (one A record each)
    assert jobs["driftline"]["dns_sd_configs"] == [
        {"names": ["driftline"], "type": "A", "port": 9108}
    ]
    assert 'up{job="driftline"}' in _alerts()["DriftlineServiceDown"]["expr"]
    assert config["rule_files"] == [p.name for p in RULE_FILES]


# -- the PrometheusRule ------------------------------------------------------------------


def _prometheusrule_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "driftline_prometheusrule", KUBERNETES / "prometheusrule.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_prometheusrule_carries_exactly_the_rule_files():
    resource = _load(KUBERNETES / "prometheusrule.yaml")
    assert resource["apiVersion"] == "monitoring.coreos.com/v1"
    assert resource["kind"] == "PrometheusRule"
    expected = [g for p in RULE_FILES for g in _load(p)["groups"]]
    assert resource["spec"]["groups"] == expected


def test_prometheusrule_is_what_the_generator_writes():
    module = _prometheusrule_module()
    committed = (KUBERNETES / "prometheusrule.yaml").read_text(encoding="utf-8")
    assert module.render(module.rule_groups()) == committed, "run `make generate`"


def test_prometheusrule_groups_pass_promtool(tmp_path):
    promtool = _tool("promtool", "prometheus")
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump(_load(KUBERNETES / "prometheusrule.yaml")["spec"]))
    result = _run(promtool, "check", "rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr


# -- docker-compose ----------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    return _load(DEPLOY / "docker-compose.yml")  # type: ignore[no-any-return]


def test_compose_runs_the_whole_stack():
    services = _compose()["services"]
    assert {"kafka", "driftline", "prometheus", "alertmanager", "grafana"} <= set(services)
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert "controller" in services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft
    build = services["driftline"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == ROOT / "Dockerfile"
    # the services the configuration files address by name exist
    assert services["driftline"]["ports"] == ["9108-9110:9108"]  # up to 3 replicas
    alertmanagers = _load(PROMETHEUS / "prometheus.yml")["alerting"]["alertmanagers"]
    assert alertmanagers[0]["static_configs"][0]["targets"] == ["alertmanager:9093"]
    datasource = _load(ROOT / "grafana" / "provisioning" / "datasources" / "prometheus.yaml")
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


def test_compose_mounts_exist_and_match_what_reads_them():
    services = _compose()["services"]
    mounts = {}
    for service in services.values():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), source
                mounts[target] = (DEPLOY / source).resolve()
    assert mounts["/etc/driftline/driftline.yaml"] == DEPLOY / "driftline.yaml"
    # every replica bins against the one mounted reference profile
    (model,) = load_config(DEPLOY / "driftline.yaml", environ={}).models
    assert model.reference.path is not None
    assert mounts[model.reference.path] == KUBERNETES / "fraud-reference.json"
    assert mounts["/etc/prometheus"] == PROMETHEUS
    assert mounts["/etc/grafana/provisioning"] == ROOT / "grafana" / "provisioning"
    provider = _load(ROOT / "grafana" / "provisioning" / "dashboards" / "driftline.yaml")
    path = provider["providers"][0]["options"]["path"]
    assert mounts[path] == ROOT / "grafana" / "dashboards"
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (mounts[path] / Path(home).relative_to(path)).exists()
    assert services["driftline"]["command"][-1] == "/etc/driftline/driftline.yaml"


@pytest.mark.parametrize(
    "path", [DEPLOY / "driftline.yaml", KUBERNETES / "driftline.yaml"], ids=["compose", "k8s"]
)
def test_driftline_configurations_are_valid(path):
    config = load_config(path, environ={})
    assert config.http.port == 9108


# -- the image ---------------------------------------------------------------------------


def _dockerfile() -> list[str]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def test_dockerfile_is_slim_non_root_with_a_healthcheck():
    lines = _dockerfile()
    stages = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert stages
    assert all(s == "python:3.11-slim" for s in stages)
    final = lines[max(i for i, line in enumerate(lines) if line.startswith("FROM ")) :]
    (user,) = [line.split()[1] for line in final if line.startswith("USER ")]
    assert user.split(":")[0] not in ("root", "0")
    assert "EXPOSE 9108" in final
    (healthcheck,) = [line for line in final if line.startswith("HEALTHCHECK ")]
    assert "http://127.0.0.1:9108/healthz" in healthcheck
    assert 'ENTRYPOINT ["driftline"]' in final
    assert any(re.search(r"pip install \.$", line) for line in lines)


def test_the_image_gets_every_package_and_nothing_else():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    # a sub-package (consumers.web) comes with its parent's directory
    packages = list(
        dict.fromkeys(p.split(".")[0] for p in pyproject["tool"]["setuptools"]["packages"])
    )
    copied = {line.split()[1].rstrip("/") for line in _dockerfile() if line.startswith("COPY ")}
    assert set(packages) | {"pyproject.toml"} <= copied
    ignore = (ROOT / ".dockerignore").read_text().split()
    # everything is excluded, then exactly what the build reads is let back in
    assert ignore[ignore.index("*") + 1 :][: len(packages) + 2] == [
        "!pyproject.toml",
        "!README.md",
        *(f"!{p}" for p in packages),
    ]
    assert pyproject["project"]["readme"] == "README.md"


# -- Kubernetes --------------------------------------------------------------------------


def test_kustomization_references_existing_files():
    kustomization = _load(KUBERNETES / "kustomization.yaml")
    for resource in kustomization["resources"]:
        assert (KUBERNETES / resource).is_file(), resource
    for generator in kustomization["configMapGenerator"]:
        for file in generator["files"]:
            assert (KUBERNETES / file).is_file(), file


def test_deployment_probes_and_security():
    deployment = _kubernetes("Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["ports"] == [{"name": "http", "containerPort": 9108}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # the configuration comes from the generated ConfigMap, where the args expect it
    kustomization = _load(KUBERNETES / "kustomization.yaml")
    (generator,) = kustomization["configMapGenerator"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    config = [n for n, v in volumes.items() if v.get("configMap", {}).get("name")]
    assert [volumes[n]["configMap"]["name"] for n in config] == [generator["name"]]
    file, reference = (f.split("#")[0].strip() for f in generator["files"])
    assert container["args"][-1] == f"{mounts[config[0]]}/{file}"
    assert container["image"] in {i["name"] for i in kustomization["images"]}
    # a read-only root filesystem needs the state in Kafka, not in a directory
    loaded = load_config(KUBERNETES / file, environ={})
    assert loaded.state.kafka_topic
    # several replicas: one reference profile for all, from the same ConfigMap
    (model,) = loaded.models
    assert model.reference.path == f"{mounts[config[0]]}/{reference}"


def test_three_replicas_and_a_disruption_budget():
    deployment = _kubernetes("Deployment")
    assert deployment["spec"]["replicas"] == 3
    budget = _kubernetes("PodDisruptionBudget")
    assert budget["spec"]["maxUnavailable"] == 1
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


def test_reference_profile_is_what_the_generator_writes():
    spec = importlib.util.spec_from_file_location(
        "driftline_reference", KUBERNETES / "reference.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    committed = (KUBERNETES / "fraud-reference.json").read_text(encoding="utf-8")
    assert module.profile_json() == committed, "run `make generate`"


def test_service_and_servicemonitor_find_the_pods():
    pod_labels = _kubernetes("Deployment")["spec"]["template"]["metadata"]["labels"]
    service = _kubernetes("Service")
    assert service["metadata"]["name"] == "driftline"  # the job label the rules select
    assert service["spec"]["selector"].items() <= pod_labels.items()
    (port,) = service["spec"]["ports"]
    assert port == {"name": "http", "port": 9108, "targetPort": "http"}
    monitor = _kubernetes("ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == [port["name"]]
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
