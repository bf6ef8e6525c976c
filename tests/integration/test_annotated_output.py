"""The annotated output on the demo, through the CLI: every frame drawn into a video that OpenCV opens again,
with the demo's frame count, and boxes where the records say; snapshots only of the chosen classes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from support.status_daemon import DEMO_DECODER, DEMO_PREPROCESS, demo_frames

pytestmark = pytest.mark.slow


def run_demo(tmp_path: Path, model, video: Path, annotated: dict) -> tuple[list[dict], str]:
    config = {
        "sources": [{"id": "bikes", "type": "video", "path": str(video)}],
        "models": [{"id": "yolov3-tiny", "path": str(model.onnx), "labels": str(model.labels),
                    "sources": ["bikes"], "preprocess": DEMO_PREPROCESS, "decoder": DEMO_DECODER}],
        "outputs": [{"type": "jsonl", "path": "-"}, {"type": "annotated", "dir": str(tmp_path / "out"), **annotated}],
    }
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.run([sys.executable, "-m", "edgeinfer", "run", str(path)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    return [r for r in records if r["type"] == "detections"], proc.stderr


def read_video(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), path
    frames = []
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    return frames


def test_annotated_video_of_the_demo_has_every_frame_with_its_boxes(tmp_path, demo_model, demo_video):
    # queue: the whole file may wait for the encoder on this shared 2-core box; drops would be counted, and
    # a dropped frame would fail the count below
    records, _ = run_demo(tmp_path, demo_model, demo_video, {"queue": 300})
    videos = sorted((tmp_path / "out").glob("*.mp4"))
    assert len(videos) == 1 and videos[0].name.startswith("yolov3-tiny_bikes_")
    drawn = read_video(videos[0])
    source = demo_frames(demo_video)
    assert len(drawn) == len(source) == len(records) == 250
    assert drawn[0].shape == source[0].shape == (272, 640, 3)

    # the boxes are in the pixels: along a published box's edge the drawn frame differs from the source far
    # more than the codec's own error elsewhere in the frame
    edge_diffs, codec_diffs = [], []
    for record in records[::25]:
        for det in record["detections"]:
            x1, y1, x2, y2 = (int(round(v)) for v in det["bbox"])
            if x2 - x1 < 20 or y2 - y1 < 20 or y2 >= 270:
                continue
            a, b = drawn[record["frame"]].astype(np.int16), source[record["frame"]].astype(np.int16)
            row = slice(max(0, x1 + 2), min(639, x2 - 2))
            edge_diffs.append(np.abs(a[y2, row] - b[y2, row]).mean())
            codec_diffs.append(np.abs(a[-40:, :] - b[-40:, :]).mean())
    assert edge_diffs, "no box in the sampled frames"
    assert np.median(edge_diffs) > 3 * np.median(codec_diffs) + 10, (np.median(edge_diffs), np.median(codec_diffs))


def test_snapshots_only_of_the_chosen_class(tmp_path, demo_model, demo_video):
    records, _ = run_demo(tmp_path, demo_model, demo_video,
                          {"mode": "snapshots", "classes": ["person"], "min_score": 0.5, "snapshot_every_s": 0})
    shots = sorted((tmp_path / "out").glob("*.jpg"))
    wanted = [r for r in records if any(d["label"] == "person" and d["score"] >= 0.5 for d in r["detections"])]
    assert wanted, "the demo shows people"
    assert len(shots) == len(wanted)
    frames = sorted(int(p.stem.rsplit("_", 1)[1]) for p in shots)
    assert frames == [r["frame"] for r in wanted]
    image = cv2.imread(str(shots[0]))
    assert image.shape == (272, 640, 3)
