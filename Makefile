# The README's two commands are `make demo` and `make test`; both bootstrap
# first. Tools built from Go modules are cached under $(PROXYREFRESH_CACHE).
SHELL := /bin/bash
export PROXYREFRESH_CACHE ?= $(HOME)/.cache/proxyrefresh
VENV := .venv/bin
PYTEST_ARGS ?=

.PHONY: bootstrap test lint unit integration demo bench clean

bootstrap:
	@bash hack/bootstrap.sh

lint: bootstrap
	$(VENV)/ruff check .
	$(VENV)/ruff format --check .
	$(VENV)/mypy proxyrefresh tests bench

unit: bootstrap
	$(VENV)/pytest tests/unit $(PYTEST_ARGS)

integration: bootstrap
	$(VENV)/pytest tests/integration $(PYTEST_ARGS)

test: lint
	$(VENV)/pytest tests $(PYTEST_ARGS)

demo: bootstrap
	$(VENV)/python -m proxyrefresh.testing.demo

bench: bootstrap
	$(VENV)/python bench/check_throughput.py
	$(VENV)/python bench/judge_rps.py

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache build *.egg-info
