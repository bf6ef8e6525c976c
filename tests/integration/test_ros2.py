"""ROS 2 over real DDS (Fast DDS from the ROS 2 Kilted wheels): the daemon in one process, a peer
(support/ros_peer.py) in another, on a ROS_DOMAIN_ID of this test run. vision_msgs comes from the test
fixture package (tests/fixtures/ros/vision_msgs) and edgeinfer_msgs from ros2_ws, both built by `make ros`.
Skipped (not failed) where rclpy or the built interfaces are missing."""

from __future__ import annotations

import math
import py_compile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from support.daemon_process import DaemonProcess, first
from support.ros import ROOT, RosPeer, ros_env, ros_unavailable, stamp_s
from support.tiny_models import malformed_on_white_detector

pytestmark = pytest.mark.skipif(ros_unavailable() is not None, reason=str(ros_unavailable()))

MODEL = "yolov3-tiny"
TOPIC_MODEL = "yolov3_tiny"  # ROS names have no '-'
DETECTIONS = f"/edgeinfer/{TOPIC_MODEL}/detections"
DEFAULT_QOS = {"reliability": "reliable", "durability": "volatile", "depth": 1000}
SENSOR_QOS = {"reliability": "best_effort", "durability": "volatile", "depth": 1000}


def demo_model_entry(demo_model, source: str) -> dict:
    return {
        "id": MODEL, "path": str(demo_model.onnx), "labels": str(demo_model.labels), "sources": [source],
        "preprocess": {"resize": "stretch", "color": "rgb", "scale": 1 / 255},
        "decoder": {"type": "yolo", "layout": "v5", "conf_threshold": 0.25, "iou_threshold": 0.45},
    }


def subscription(name: str, topic: str, kind: str, qos: dict) -> dict:
    return {"name": name, "topic": topic, "type": kind, "qos": qos}


def test_every_demo_frame_arrives_as_detection2darray_for_default_and_sensor_data_subscribers(
        tmp_path, demo_model, demo_video):
    peer = RosPeer({"subscribe": [
        subscription("default", DETECTIONS, "vision_msgs/msg/Detection2DArray", DEFAULT_QOS),
        subscription("sensor", DETECTIONS, "vision_msgs/msg/Detection2DArray", SENSOR_QOS),
        # joins late on purpose: transient-local LabelInfo still reaches it
        subscription("labels", f"/edgeinfer/{TOPIC_MODEL}/label_info", "vision_msgs/msg/LabelInfo",
                     {"reliability": "reliable", "durability": "transient_local", "depth": 1}),
    ]}, tmp_path / "peer.log")
    peer.wait_for(lambda ev: first(ev, lambda e: e["event"] == "ready"), 30, "the peer")
    config = {
        "sources": [{"id": "bikes", "type": "video", "path": str(demo_video), "frame_id": "front_camera"}],
        "models": [demo_model_entry(demo_model, "bikes")],
    }
    # the daemon waits until both subscriptions matched, then replays the file frame by frame
    ros_output = {"type": "ros2", "wait_for_subscribers": 2, "wait_timeout_s": 30}
    daemon = DaemonProcess(tmp_path, config, extra_outputs=[ros_output], env=ros_env(), watchdog_usec=None)
    try:
        code = daemon.proc.wait(300)
        assert code == 0, daemon.stderr()
        records = daemon.records()
        assert len(records) == 250
        peer.wait_for(lambda ev: len([e for e in ev if e.get("name") == "default"]) >= 250, 30,
                      "250 messages on the default-QoS subscription")
        time.sleep(0.5)  # the last best-effort messages
        default, sensor = peer.messages("default"), peer.messages("sensor")
        labels = peer.messages("labels")
    finally:
        daemon.stop()
        peer.stop()

    # every frame once, in order, with the capture stamp and the configured frame_id
    assert len(default) == 250
    msgs = [e["msg"] for e in default]
    for record, msg in zip(records, msgs):
        assert abs(stamp_s(msg) - record["stamp"]) < 2e-6
        assert msg["header"]["frame_id"] == "front_camera"
        assert len(msg["detections"]) == len(record["detections"])
        for det, ref in zip(msg["detections"], record["detections"]):
            hyp = det["results"][0]["hypothesis"]
            assert hyp["class_id"] == str(ref["class_id"])  # the class number; names come through LabelInfo
            assert abs(hyp["score"] - ref["score"]) < 1e-4
            x1, y1, x2, y2 = ref["bbox"]
            box = det["bbox"]
            assert abs(box["center"]["position"]["x"] - (x1 + x2) / 2) < 0.1
            assert abs(box["center"]["position"]["y"] - (y1 + y2) / 2) < 0.1
            assert abs(box["size_x"] - (x2 - x1)) < 0.1 and abs(box["size_y"] - (y2 - y1)) < 0.1
            assert det["header"]["frame_id"] == "front_camera"
    assert sum(len(m["detections"]) for m in msgs) > 100

    # best effort on loopback: the sensor-data subscriber receives too (a lost sample is allowed by its QoS)
    sensor_stamps = {round(stamp_s(e["msg"]), 6) for e in sensor}
    assert len(sensor) >= 240 and sensor_stamps <= {round(stamp_s(m), 6) for m in msgs}

    # names through LabelInfo: class 2 is "car" in coco.names
    assert labels, "no LabelInfo (transient local) for a subscriber that joined before the publisher"
    class_map = {c["class_id"]: c["class_name"] for c in labels[-1]["msg"]["class_map"]}
    assert len(class_map) == 80 and class_map[2] == "car" and class_map[0] == "person"
    names = {class_map[int(d["results"][0]["hypothesis"]["class_id"])] for m in msgs for d in m["detections"]}
    assert {"car", "person"} <= names
