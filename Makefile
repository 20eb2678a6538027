# The README's two commands are `make demo` and `make test`; both bootstrap
# first. Tools built from Go modules are cached under $(PROXYREFRESH_CACHE).
SHELL := /bin/bash
export PROXYREFRESH_CACHE ?= $(HOME)/.cache/proxyrefresh
# Go-built tools (etcd, the kube binaries, helm, containerd, crictl)
# come first on PATH, for us and for the pods the local cluster runs.
export PATH := $(PROXYREFRESH_CACHE)/bin:$(PATH)
export PROXYREFRESH_GO_TOOLS ?= etcd kube helm node
# Where the local cluster keeps its state: $PROXYREFRESH_CLUSTER_DIR, else
# the checkout's .cluster (a second user of the machine sets their own).
CLUSTER_DIR ?= $(or $(PROXYREFRESH_CLUSTER_DIR),$(CURDIR)/.cluster)
VENV := .venv/bin
PYTEST_ARGS ?=

.PHONY: bootstrap test lint unit integration e2e demo bench clean cluster-up cluster-down \
	dev-up dev-down pod-logs chart-check constraints

bootstrap:
	@bash hack/bootstrap.sh

# Re-pin hack/constraints.txt to the newest releases pyproject.toml's ranges
# allow (what bootstrap installs); then run `make test`.
constraints:
	@bash hack/freeze-constraints.sh

lint: bootstrap
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy proxyrefresh tests bench

unit: bootstrap
	$(VENV)/pytest tests/unit $(PYTEST_ARGS)

integration: bootstrap
	$(VENV)/pytest tests/integration $(PYTEST_ARGS)

e2e: bootstrap
	$(VENV)/pytest tests/e2e $(PYTEST_ARGS)

# The local cluster with its real node (containerd, runc, kubelet; needs root).
cluster-up: bootstrap
	@$(VENV)/python -m tests.harness.cluster up --dir $(CLUSTER_DIR)

cluster-down:
	@$(VENV)/python -m tests.harness.cluster down --dir $(CLUSTER_DIR)

# The cluster, Redis ($$PROXYREFRESH_REDIS_URL, default 127.0.0.1:6379) and
# the operator in the background; its workers are containers on the node.
dev-up: bootstrap
	@$(VENV)/python -m tests.harness.devenv up --dir $(CLUSTER_DIR)

dev-down:
	@$(VENV)/python -m tests.harness.devenv down --dir $(CLUSTER_DIR)

# What needs no cluster: helm lint, the rendered chart against manifests/,
# hadolint and checkov. (The server-side dry run is in tests/e2e/test_chart.py.)
chart-check: bootstrap
	$(VENV)/pytest tests/integration/test_chart.py $(PYTEST_ARGS)

# The slowest tests are listed at the end: the suite's time budget is watched.
# The e2e tests (one cluster, mostly waiting on it) and the unit and
# integration tests run side by side, two pytest processes on the two cores;
# the second one's report follows the first's.
test: lint
	@mkdir -p .artifacts
	@$(VENV)/pytest tests/unit tests/integration -p no:cacheprovider --durations=10 $(PYTEST_ARGS) \
		>.artifacts/unit-integration.log 2>&1 & side=$$!; \
	$(VENV)/pytest tests/e2e --durations=15 $(PYTEST_ARGS); e2e=$$?; \
	wait $$side; others=$$?; \
	echo "=== tests/unit and tests/integration (run alongside) ==="; \
	cat .artifacts/unit-integration.log; \
	exit $$(( e2e != 0 || others != 0 ))

demo: bootstrap
	$(VENV)/python -m tests.harness.demo

bench: bootstrap
	$(VENV)/python -m bench.check_throughput
	$(VENV)/python -m bench.judge_rps
	$(VENV)/python -m bench.refresh_e2e
	$(VENV)/python -m bench.pool
	$(VENV)/python -m bench.rotator
	$(VENV)/python -m bench.fairness
	$(VENV)/python -m bench.startup

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache build *.egg-info
