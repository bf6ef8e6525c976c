"""GPU tests: skipped (not failed) where cuda-python or a CUDA GPU is missing, as in CI."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

GPU_DIR = Path(__file__).resolve().parent
if str(GPU_DIR) not in sys.path:  # the stand-in TensorRT module is imported by name, like `tensorrt`
    sys.path.insert(0, str(GPU_DIR))


def _gpu_count() -> int:
    try:
        from edgeinfer.cuda import runtime

        return runtime.device_count()
    except Exception:
        return 0


def pytest_collection_modifyitems(config, items):
    if _gpu_count() > 0:
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU with CUDA and cuda-python (run `make test-gpu` on one)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def gpu_dir() -> Path:
    return GPU_DIR
