# The two set-up commands of the README: `make demo` and `make test`.
# Both create .venv themselves; nothing needs to be installed by hand but Python 3.11.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DURATION ?= 60

.PHONY: demo test lint typecheck unit integration bench clean prometheus-tools browser rules generate e2e

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed
	$(BIN)/driftline demo --duration $(DEMO_DURATION)

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

PROMETHEUS_PACKAGES := prometheus prometheus-alertmanager

# promtool, prometheus and alertmanager (Debian packages) for the rule checks and the e2e
# tests: installed when running as root (CI) and missing; otherwise left alone, and the
# tests that need them are skipped with an install hint.
prometheus-tools:
	@if command -v promtool >/dev/null && command -v prometheus >/dev/null \
	    && { command -v prometheus-alertmanager || command -v alertmanager; } >/dev/null; then \
	    :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing $(PROMETHEUS_PACKAGES)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	        apt-get install -y -qq --no-install-recommends $(PROMETHEUS_PACKAGES) >/dev/null; \
	else \
	    echo "promtool/prometheus/alertmanager missing and not root: their tests will be skipped" \
	        "(sudo apt-get install $(PROMETHEUS_PACKAGES))"; \
	fi

BROWSER_PACKAGES := chromium

# Debian's chromium for the browser tests of the web view and the replay report (driven by
# Playwright, which cannot download its own browser everywhere): installed when running
# as root and missing; otherwise the browser tests are skipped with an install hint.
browser:
	@if command -v chromium >/dev/null; then \
	    :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing $(BROWSER_PACKAGES)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	        apt-get install -y -qq --no-install-recommends $(BROWSER_PACKAGES) >/dev/null; \
	else \
	    echo "chromium missing and not root: the browser tests will be skipped" \
	        "(sudo apt-get install $(BROWSER_PACKAGES))"; \
	fi

# promtool on every rule file, the rule unit tests and the Prometheus configuration
rules: prometheus-tools
	@if command -v promtool >/dev/null; then \
	    promtool check rules deploy/prometheus/recording_rules.yml deploy/prometheus/alert_rules.yml \
	    && promtool test rules deploy/prometheus/tests/*.yml \
	    && promtool check config deploy/prometheus/prometheus.yml; \
	else \
	    echo "promtool missing: rule checks skipped"; \
	fi

# regenerate the committed dashboards JSON and the Kubernetes PrometheusRule
generate: $(VENV)/.installed-dev
	$(BIN)/python grafana/dashboards.py
	$(BIN)/python deploy/kubernetes/prometheusrule.py
	$(BIN)/python deploy/kubernetes/reference.py

e2e: $(VENV)/.installed-dev prometheus-tools
	$(BIN)/python -m pytest tests/e2e

# the slowest tests are listed at the end, to keep the whole run short
test: lint typecheck rules browser
	$(BIN)/python -m pytest --durations=25

unit: $(VENV)/.installed-dev
	$(BIN)/python -m pytest tests/unit monitor

integration: $(VENV)/.installed-dev browser
	$(BIN)/python -m pytest tests/integration

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/decode.py
	$(BIN)/python bench/checkpoint.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/http_load.py
	$(BIN)/python bench/web_view.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
