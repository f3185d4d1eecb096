# ImpliCity for QGIS — every set-up step lives here, so a fresh Debian 12 machine needs only
# `make demo` or `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV        := .venv
PY          := $(VENV)/bin/python
PIP         := $(PY) -m pip
SYS_PYTHON  := /usr/bin/python3
APT_PACKAGES := qgis python3-qgis qgis-providers python3-venv python3-pip xvfb xauth imagemagick
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# torch: the pinned CPU wheel. A local wheel folder is used when the machine has one, PyTorch's
# CPU index otherwise (PyPI's Linux torch is a multi-GB CUDA build).
TORCH_SOURCE := $(if $(wildcard /opt/wheels/torch-*),--find-links /opt/wheels,--extra-index-url https://download.pytorch.org/whl/cpu)
STAMP       := $(VENV)/.requirements.stamp
PLUGIN_NAME := implicity
QGIS_PROFILE ?= $(HOME)/.local/share/QGIS/QGIS3/profiles/default
DEMO_OUT    ?= demo_output

export QT_QPA_PLATFORM ?= offscreen

.PHONY: help setup apt venv test typecheck demo bench model-card package deploy qgis clean

help:
	@echo "make demo    - set up, then run the demo on bundled data"
	@echo "make test    - set up, then run the linter (ruff) and the test suite"
	@echo "make typecheck - set up, then type-check core/ with mypy (configured in pyproject.toml)"
	@echo "make bench   - run the benchmarks under bench/"
	@echo "make model-card - evaluate the shipped models on the held-out protocol (needs ../shared/data)"
	@echo "make package - build the installable QGIS plugin zip in dist/"
	@echo "make deploy  - install the plugin zip into the QGIS profile and enable it"
	@echo "make qgis    - start QGIS with the plugin deployed"

setup: apt $(STAMP)

apt:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(VENV)/bin/python:
	$(SYS_PYTHON) -m venv --system-site-packages $(VENV)

$(STAMP): requirements.txt pyproject.toml setup.py | $(VENV)/bin/python
	$(PIP) install -q --upgrade "pip>=24" "setuptools>=77" wheel
	$(PIP) install -q $(TORCH_SOURCE) -r requirements.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	@# Debian's pyproj in the venv looks for PROJ data under the venv prefix.
	@mkdir -p $(VENV)/share && [ -e $(VENV)/share/proj ] || ln -s /usr/share/proj $(VENV)/share/proj
	@touch $@

test: setup
	$(PY) -m ruff check --no-cache .
	$(PY) -m pytest -q tests

typecheck: setup
	$(PY) -m mypy

demo: setup
	$(PY) -m implicity.demo --out $(DEMO_OUT)

bench: setup
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

model-card: setup
	$(PY) tools/model_card.py

package:
	$(SYS_PYTHON) tools/package_plugin.py --out dist/$(PLUGIN_NAME).zip

deploy: package
	rm -rf "$(QGIS_PROFILE)/python/plugins/$(PLUGIN_NAME).old"
	mkdir -p "$(QGIS_PROFILE)/python/plugins"
	[ ! -d "$(QGIS_PROFILE)/python/plugins/$(PLUGIN_NAME)" ] || mv "$(QGIS_PROFILE)/python/plugins/$(PLUGIN_NAME)" "$(QGIS_PROFILE)/python/plugins/$(PLUGIN_NAME).old"
	cd "$(QGIS_PROFILE)/python/plugins" && unzip -q "$(CURDIR)/dist/$(PLUGIN_NAME).zip"
	rm -rf "$(QGIS_PROFILE)/python/plugins/$(PLUGIN_NAME).old"
	@# Enabled as Plugins > Manage would do it: the desktop and qgis_process load it without a click.
	$(SYS_PYTHON) tools/package_plugin.py --enable "$(QGIS_PROFILE)"
	@echo "Deployed to $(QGIS_PROFILE)/python/plugins/$(PLUGIN_NAME)"

qgis: setup deploy
	PYTHONPATH=$(CURDIR)/$(VENV)/lib/python3.11/site-packages qgis --noversioncheck

clean:
	rm -rf dist build *.egg-info .pytest_cache .mypy_cache .ruff_cache $(DEMO_OUT)
	find . -name __pycache__ -prune -exec rm -rf {} +
