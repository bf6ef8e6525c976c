# Two commands on a fresh machine with Python >= 3.10:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
EDGE   := $(VENV)/bin/edgeinfer

.PHONY: setup system-deps models demo test lint clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# GStreamer's RTSP server (tests serve a camera on loopback) and systemd-analyze (unit tests of the service)
system-deps:
	sh tests/system-deps.sh

models: setup
	$(EDGE) models fetch yolov3-tiny
	$(EDGE) models fetch bikes

demo: models
	$(EDGE) run configs/demo.yaml

lint: setup
	$(VENV)/bin/ruff check daemon tests benchmarks

test: setup system-deps models lint
	$(PY) -m pytest -q -ra --durations=10

clean:
	rm -rf $(VENV) models/yolov3-tiny models/media
