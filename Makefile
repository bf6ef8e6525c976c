# Two commands on a fresh machine with Python >= 3.10:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
EDGE   := $(VENV)/bin/edgeinfer

.PHONY: setup system-deps triton-server models demo test test-gpu lint clean

setup: $(VENV)/.installed

# Debian/Ubuntu (and JetPack) ship python3 without venv: install python3-venv once with apt-get if needed.
$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
		{ echo "edgeinfer needs Python >= 3.10; $(PYTHON) is $$($(PYTHON) --version 2>&1)" >&2; exit 1; }
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { rm -rf $(VENV); \
		echo "python venv support missing: installing python3-venv with apt-get" >&2; \
		$$( [ "$$(id -u)" -eq 0 ] || echo sudo ) apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# GStreamer's RTSP server (tests serve a camera on loopback) and systemd-analyze (unit tests of the service)
system-deps:
	sh tests/system-deps.sh

# A real Triton Inference Server for the tests and bench_triton.py, in its own venv (nvidia-pytriton pins numpy<2)
TRITON_VENV ?= .venv-triton
triton-server: $(TRITON_VENV)/.installed

$(TRITON_VENV)/.installed: tests/triton-server-requirements.txt
	$(PYTHON) -m venv $(TRITON_VENV)
	$(TRITON_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(TRITON_VENV)/bin/python -m pip install --quiet -r tests/triton-server-requirements.txt
	touch $@

models: setup
	$(EDGE) models fetch yolov3-tiny
	$(EDGE) models fetch bikes

demo: models
	$(EDGE) run configs/demo.yaml

lint: setup
	$(VENV)/bin/ruff check daemon tests benchmarks

test: setup system-deps triton-server models lint
	$(PY) -m pytest -q -ra --durations=10

clean:
	rm -rf $(VENV) $(TRITON_VENV) models/yolov3-tiny models/media

# On a box with an NVIDIA GPU and cuda-python (pip install '.[trt]'): the GPU tests and the GPU benchmark
test-gpu: setup models
	$(PY) -m pytest -q -ra -m gpu tests/gpu
	PYTHONPATH=tests/gpu $(PY) benchmarks/bench_gpu.py
