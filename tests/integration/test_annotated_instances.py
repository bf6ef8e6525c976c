"""Masks, keypoints and track ids drawn by the annotated output, from a real daemon running small ONNX models
that answer with known Ultralytics segment / pose head outputs (support/yolo_heads.py), tracking on for the
segment model: the drawn frames differ from the source inside each record's mask and at each confident
keypoint, and stay as they were far from every detection."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from test_byom import write_images

from edgeinfer import rle
from support.daemon_process import DaemonProcess
from support.yolo_heads import instance_models

pytestmark = pytest.mark.slow
FRAMES = 3


def read_video(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image.astype(np.int16))
    cap.release()
    return frames


def test_masks_keypoints_and_track_ids_are_drawn(tmp_path: Path):
    segmenter, poser = instance_models(tmp_path)
    images = [np.full((64, 128, 3), 60 + 40 * i, np.uint8) for i in range(FRAMES)]
    config = {"sources": [{"id": "cam", "type": "images", "path": str(write_images(tmp_path / "images", images))}],
              "models": [{"id": "seg", "path": str(segmenter), "sources": ["cam"], "budget_ms": 20000,
                          "tracker": {"type": "bytetrack"}},
                         {"id": "pose", "path": str(poser), "sources": ["cam"], "budget_ms": 20000}]}
    # MJPG in AVI at full quality: flat test images come back within a few levels
    annotated = {"type": "annotated", "dir": str(tmp_path / "video"), "codec": "MJPG", "container": "avi"}
    daemon = DaemonProcess(tmp_path, config, extra_outputs=[annotated], watchdog_usec=None)
    try:
        assert daemon.proc.wait(240) == 0, daemon.stderr()
    finally:
        daemon.stop()
    records = [r for r in daemon.lines() if r["type"] != "heartbeat"]
    seg = [r for r in records if r["model"] == "seg"]
    pose = [r for r in records if r["model"] == "pose"]
    assert len(seg) == len(pose) == FRAMES
    [seg_video] = (tmp_path / "video").glob("seg_cam_*.avi")
    [pose_video] = (tmp_path / "video").glob("pose_cam_*.avi")
    seg_frames, pose_frames = read_video(seg_video), read_video(pose_video)
    assert len(seg_frames) == len(pose_frames) == FRAMES

    for record, drawn, source in zip(seg, seg_frames, images):
        diff = np.abs(drawn - source.astype(np.int16)).max(axis=2)
        assert [d["track_id"] for d in record["detections"]] == [1, 2]
        for detection in record["detections"]:
            mask = rle.decode(detection["mask"]).astype(bool)
            assert mask.any()
            assert np.median(diff[mask]) > 20, "the mask is not tinted"
        assert np.median(diff[40:, 100:]) < 6, "pixels far from every detection changed"

    for record, drawn, source in zip(pose, pose_frames, images):
        diff = np.abs(drawn - source.astype(np.int16)).max(axis=2)
        [detection] = record["detections"]
        confident = [(x, y) for x, y, c in detection["keypoints"] if c >= 0.5]
        assert confident
        for x, y in confident:
            assert diff[int(round(y)), int(round(x))] > 20, f"no keypoint drawn at {x, y}"
