"""Every config the project shows is checked: each file in configs/ and configs/examples/, and every complete
config (a ```yaml block with `sources:`) in README.md, with the real `edgeinfer check` (models loaded and fitted)
wherever this box can. Where it cannot, the table below says what is checked instead and why."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeinfer.preflight import load_config
from support.byom_models import constant_outputs_model

ROOT = Path(__file__).resolve().parents[2]

# how each config is checked; "full" = `edgeinfer check CONFIG` (models loaded, fitted, one test inference)
MODES = {
    "configs/demo.yaml": "full",
    "configs/ros2.yaml": "full",
    "configs/zmq-robot.yaml": "full",
    # the server is not running here: check passes on the local fallback, warning that the server is unreachable
    "configs/triton.yaml": "full",
    "configs/examples/usb-camera-ros2.yaml": "full",  # warns: no camera at /dev/video0
    "configs/examples/rtsp-zmq.yaml": "full",
    "configs/examples/triton-fallback.yaml": "full",  # warns: no camera, no server
    "configs/examples/zmq-frames-in.yaml": "full",
    # yolov8n.onnx is the user's export: checked in full on a stand-in carrying Ultralytics' metadata
    "configs/examples/ultralytics.yaml": "ultralytics-stand-in",
    # the engines and a GStreamer-enabled OpenCV (nvarguscamerasrc) exist only on the Jetson: schema and
    # cross-references only (load_config without the host checks)
    "configs/examples/jetson-dla.yaml": "schema",
}


def shown_configs() -> list[str]:
    files = [*ROOT.glob("configs/*.yaml"), *ROOT.glob("configs/examples/*.yaml")]
    return sorted(str(p.relative_to(ROOT)) for p in files)


def readme_configs() -> list[str]:
    blocks = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [block for block in blocks if re.search(r"^sources:", block, flags=re.M)]


def check(config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeinfer", "check", str(config)], capture_output=True, text=True,
                          timeout=180)


def test_every_config_file_has_a_check_mode():
    assert sorted(MODES) == shown_configs()


@pytest.mark.parametrize("name", sorted(MODES))
def test_config_passes_check(name, tmp_path, demo_model, demo_video):
    mode, path = MODES[name], ROOT / name
    if mode == "schema":
        config = load_config(path, preflight=False)
        assert config.models and config.sources and config.outputs
        return
    if mode == "ultralytics-stand-in":
        # the same relative layout in a scratch tree, with a model shaped and labelled like `yolo export`'s
        staged = tmp_path / "configs" / "examples" / path.name
        staged.parent.mkdir(parents=True)
        shutil.copy(path, staged)
        (tmp_path / "models" / "yolov8n").mkdir(parents=True)
        meta = {"names": repr({0: "person", 1: "bicycle", 2: "car"}), "imgsz": "[64, 64]", "stride": "32",
                "task": "detect", "author": "Ultralytics", "description": "Ultralytics YOLOv8n model"}
        constant_outputs_model(tmp_path / "models" / "yolov8n" / "yolov8n.onnx",
                               [("output0", np.zeros((1, 7, 20), np.float32))], metadata=meta, dynamic_hw=True)
        path = staged
    done = check(path)
    assert done.returncode == 0, done.stderr
    if mode == "ultralytics-stand-in":
        assert "decoder type yolo from the model's metadata (task detect)" in done.stdout


def test_the_readme_shows_complete_configs_and_each_passes_check(tmp_path, demo_model, demo_video):
    blocks = readme_configs()
    assert blocks, "the README shows no complete config"
    for index, block in enumerate(blocks):
        # relative paths in the README are from the checkout
        config = ROOT / f".readme-config-{os.getpid()}-{index}.yaml"
        config.write_text(block)
        try:
            done = check(config)
        finally:
            config.unlink()
        assert done.returncode == 0, f"README config {index}:\n{block}\n{done.stderr}"
