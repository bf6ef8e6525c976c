"""Segment and pose results over real DDS: the daemon (`edgeinfer run`, jsonl + ros2 outputs) in one process,
a ROS peer in another. The models are small ONNX files answering with known Ultralytics segment / pose head
outputs (support/yolo_heads.py); tracking is on for the segment model. The peer must get, per frame, the
Detection2DArray with the track ids, the instance-id image and the keypoints with the same stamp, and each
must agree with the JSONL record of that frame. Skipped (not failed) where rclpy or the interfaces are missing.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_byom import write_images

from edgeinfer import rle
from edgeinfer.transports.ros import convert as cv
from support.daemon_process import DaemonProcess, first
from support.ros import RosPeer, ros_env, ros_unavailable, stamp_s
from support.yolo_heads import instance_models

needs_ros = pytest.mark.skipif(ros_unavailable() is not None, reason=str(ros_unavailable()))
RELIABLE = {"reliability": "reliable", "durability": "volatile", "depth": 100}
FRAMES = 3


@needs_ros
def test_instance_images_and_keypoints_arrive_with_the_stamps_of_their_detections(tmp_path: Path):
    segmenter, poser = instance_models(tmp_path)
    saves = tmp_path / "payloads"
    saves.mkdir()
    subscriptions = [
        {"name": "seg_boxes", "topic": "/edgeinfer/seg/detections", "type": "vision_msgs/msg/Detection2DArray",
         "qos": RELIABLE},
        {"name": "instances", "topic": "/edgeinfer/seg/instances", "type": "sensor_msgs/msg/Image",
         "qos": RELIABLE, "save_data": str(saves)},
        {"name": "pose_boxes", "topic": "/edgeinfer/pose/detections", "type": "vision_msgs/msg/Detection2DArray",
         "qos": RELIABLE},
        {"name": "keypoints", "topic": "/edgeinfer/pose/keypoints", "type": "edgeinfer_msgs/msg/KeypointsArray",
         "qos": RELIABLE},
    ]
    peer = RosPeer({"subscribe": subscriptions}, tmp_path / "peer.log")
    peer.wait_for(lambda ev: first(ev, lambda e: e["event"] == "ready"), 30, "the peer")
    images = [np.full((64, 128, 3), 60 + 40 * i, np.uint8) for i in range(FRAMES)]
    config = {"sources": [{"id": "cam", "type": "images", "path": str(write_images(tmp_path / "images", images)),
                           "frame_id": "camera_optical"}],
              "models": [{"id": "seg", "path": str(segmenter), "sources": ["cam"], "budget_ms": 20000,
                          "tracker": {"type": "bytetrack"}},
                         {"id": "pose", "path": str(poser), "sources": ["cam"], "budget_ms": 20000}]}
    ros_output = {"type": "ros2", "wait_for_subscribers": 1, "wait_timeout_s": 30}
    daemon = DaemonProcess(tmp_path, config, extra_outputs=[ros_output], env=ros_env(), watchdog_usec=None)
    try:
        assert daemon.proc.wait(240) == 0, daemon.stderr()
        for name in ("seg_boxes", "instances", "pose_boxes", "keypoints"):
            peer.wait_for(lambda ev, name=name: len([e for e in ev if e.get("event") == "msg"
                                                     and e["name"] == name]) >= FRAMES, 30, f"{FRAMES} on {name}")
        received = {s["name"]: peer.messages(s["name"]) for s in subscriptions}
    finally:
        daemon.stop()
        peer.stop()
    records = [r for r in daemon.lines() if r["type"] != "heartbeat"]
    seg = [r for r in records if r["model"] == "seg"]
    pose = [r for r in records if r["model"] == "pose"]
    assert len(seg) == len(pose) == FRAMES

    for record, boxes, image in zip(seg, received["seg_boxes"], received["instances"], strict=True):
        assert stamp_s(boxes["msg"]) == stamp_s(image["msg"])  # the same header: pair them by stamp
        assert abs(stamp_s(image["msg"]) - record["stamp"]) < 2e-6
        assert image["msg"]["header"]["frame_id"] == "camera_optical"
        # tracking on: Detection2D.id is the track id, the same as the record's
        assert [d["id"] for d in boxes["msg"]["detections"]] == [str(d["track_id"]) for d in record["detections"]]
        assert [d["track_id"] for d in record["detections"]] == [1, 2]
        m = image["msg"]
        assert (m["encoding"], m["width"], m["height"], m["step"]) == ("mono8", 128, 64, 128)
        ids = cv.image_fields_to_array(m["encoding"], m["height"], m["width"], m["step"], m["is_bigendian"],
                                       Path(image["data_file"]).read_bytes())
        # pixel value i + 1 is detections[i]'s mask: the same mask as the record's RLE
        for index, detection in enumerate(record["detections"]):
            np.testing.assert_array_equal(ids == index + 1, rle.decode(detection["mask"]))
        assert set(np.unique(ids)) == {0, 1, 2}

    for record, boxes, keypoints in zip(pose, received["pose_boxes"], received["keypoints"], strict=True):
        assert stamp_s(boxes["msg"]) == stamp_s(keypoints["msg"])
        assert abs(stamp_s(keypoints["msg"]) - record["stamp"]) < 2e-6
        [person] = keypoints["msg"]["instances"]
        [detection] = record["detections"]
        assert person["index"] == 0 and person["id"] == "1" == boxes["msg"]["detections"][0]["id"]
        got = np.stack([person["x"], person["y"], person["confidence"]], axis=1)
        np.testing.assert_allclose(got, np.array(detection["keypoints"]), atol=0.06)  # the record rounds to 0.1 px
