# fabformer: `make demo` runs the whole pipeline on the shipped example, `make test` the test suite.
# Both run `make setup` first: it is idempotent, creates .venv/ here, installs fabformer with every
# extra, and installs the system tools it needs with apt-get when they are missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fabformer-setup
# Debian packages: Icarus Verilog (RTL simulation), LZ4 headers (Verilator FST waveforms), Tcl (checks
# Vivado scripts), Chromium (checks the HTML report in a headless browser)
APT_PACKAGES := iverilog liblz4-dev tcl g++ make chromium

.PHONY: setup system demo test clean

setup: system $(STAMP)

system:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "setup: installing Debian packages:$$missing"; \
	  SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	else echo "setup: Debian packages present ($(APT_PACKAGES))"; fi

$(STAMP): pyproject.toml
	@echo "setup: creating $(VENV) and installing fabformer with every extra (about 3.3 GB, a few minutes once)"
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[all]"
	@touch $(STAMP)
	@echo "setup: done"

demo: setup
	$(VENV)/bin/fabformer demo -o out/demo

# the suite runs on TEST_JOBS pytest-xdist workers (CI's machine has 2 cores; the simulation
# builds they share are locked per design, sim/runner.py build_lock)
TEST_JOBS ?= 2

test: setup
	$(PY) -m pytest -q -n $(TEST_JOBS)

clean:
	rm -rf out .pytest_cache
