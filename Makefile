# keyward — the quick start is `make demo` and `make test`; both install what is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEBS := softhsm2 opensc openssl curl wrk
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit setup system-packages clean

demo: setup
	$(BIN)/python scripts/demo.py

test: setup
	@start=$$(date +%s); $(MAKE) --no-print-directory lint typecheck unit; rc=$$?; \
	echo "make test: $$(( $$(date +%s) - start )) s wall time"; exit $$rc

lint: setup
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/lint-imports

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest -q -p no:cacheprovider

setup: system-packages $(STAMP)

# Debian packages: the PKCS#11 token (SoftHSM2), pkcs11-tool (OpenSC), the openssl and curl
# peers of the tests, wrk (the EST load generator of `keyward bench`), and kubectl (Debian's
# kubernetes-client) when no kubectl is on PATH.
system-packages:
	@missing=""; \
	for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v kubectl >/dev/null 2>&1 || missing="$$missing kubernetes-client"; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) .keyward .pytest_cache .mypy_cache .ruff_cache
