"""The ROS message contents, without ROS: image encodings to BGR, stamps, boxes, heartbeat and diagnostics
values, QoS presets; and the ros2 source's newest-message mailbox. rclpy is not imported into pytest (its
wheel re-executes the interpreter), so plain objects with the fields of sensor_msgs/Image stand in for the
messages here; tests/integration/test_ros2.py sends the real ones over DDS."""

from __future__ import annotations

import math
import time
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from edgeinfer.instances import Instance, InstanceMask
from edgeinfer.mailbox import FanOut
from edgeinfer.results import Detection
from edgeinfer.sources.base import BadFrame
from edgeinfer.transports.ros import convert as cv
from edgeinfer.transports.ros.schema import QosConfig
from edgeinfer.transports.ros.source import Ros2Source, Ros2SourceConfig

RNG = np.random.default_rng(7)
BGR = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)


@pytest.mark.parametrize("encoding, code", [("bgr8", None), ("rgb8", cv2.COLOR_BGR2RGB),
                                            ("bgra8", cv2.COLOR_BGR2BGRA), ("rgba8", cv2.COLOR_BGR2RGBA)])
def test_colour_encodings_come_back_as_the_same_bgr_pixels(encoding, code):
    pixels = BGR if code is None else cv2.cvtColor(BGR, code)
    out = cv.image_to_bgr(encoding, 5, 7, pixels.shape[1] * pixels.shape[2], pixels.tobytes())
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, BGR)


def test_mono8_and_padded_rows():
    gray = RNG.integers(0, 256, (4, 6), dtype=np.uint8)
    padded = np.zeros((4, 8), np.uint8)
    padded[:, :6] = gray  # step 8 for 6 pixels: two bytes of padding per row
    out = cv.image_to_bgr("mono8", 4, 6, 8, padded.tobytes())
    assert out.shape == (4, 6, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


def test_the_converted_image_does_not_share_the_message_buffer():
    data = bytearray(BGR.tobytes())
    out = cv.image_to_bgr("bgr8", 5, 7, 21, data)
    data[0] ^= 0xFF
    assert out[0, 0, 0] == BGR[0, 0, 0]


@pytest.mark.parametrize("args, words", [
    (("16UC1", 5, 7, 14, b"\0" * 70), ["unsupported encoding", "rgb8", "mono8"]),
    (("bgr8", 5, 7, 21, b"\0" * 50), ["50 data bytes", "7x5"]),
    (("bgr8", 5, 7, 10, b"\0" * 105), ["step 10"]),
    (("bgr8", 0, 7, 21, b""), ["bad image size"]),
])
def test_bad_raw_images_are_refused_with_the_reason(args, words):
    with pytest.raises(ValueError) as info:
        cv.image_to_bgr(*args)
    for word in words:
        assert word in str(info.value)


def test_compressed_png_is_lossless_and_jpeg_close():
    png = cv2.imencode(".png", BGR)[1].tobytes()
    np.testing.assert_array_equal(cv.compressed_to_bgr("png", png), BGR)
    smooth = np.full((32, 32, 3), (10, 120, 240), np.uint8)
    jpeg = cv2.imencode(".jpg", smooth, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
    assert np.abs(cv.compressed_to_bgr("rgb8; jpeg compressed bgr8", jpeg).astype(int) - smooth).max() <= 3


@pytest.mark.parametrize("fmt, data, words", [("tiff", b"xx", ["unsupported compressed format"]),
                                               ("jpeg", b"", ["empty"]), ("jpeg", b"not a jpeg", ["cannot decode"])])
def test_bad_compressed_images_are_refused(fmt, data, words):
    with pytest.raises(ValueError) as info:
        cv.compressed_to_bgr(fmt, data)
    assert all(w in str(info.value) for w in words)


def test_stamps_survive_the_float_seconds_inside_the_frame_within_a_microsecond():
    now = time.time_ns()
    for ns in [now + k * 7_919_191 for k in range(2000)] + [1_000_000_000, 999]:
        sec, nanosec = divmod(ns, 1_000_000_000)
        back_sec, back_ns = cv.seconds_to_stamp(cv.stamp_to_seconds(sec, nanosec))
        assert 0 <= back_ns < 1_000_000_000
        assert abs(back_sec * 1_000_000_000 + back_ns - ns) <= 1000
    assert cv.stamp_to_seconds(0, 0) is None  # unset: the source stamps the arrival instead


def test_boxes_class_ids_and_topic_names():
    assert cv.detection_values((10.0, 20.0, 30.5, 60.0)) == (20.25, 40.0, 20.5, 40.0)
    assert cv.class_id_text(2, "car", False) == "2" and cv.class_id_text(2, "car", True) == "car"
    assert cv.ros_name("yolov3-tiny") == "yolov3_tiny"


def test_qos_presets_and_overrides():
    assert QosConfig().resolved() == ("reliable", "volatile", 10)
    assert QosConfig(preset="sensor_data").resolved() == ("best_effort", "volatile", 5)
    assert QosConfig(preset="sensor_data", reliability="reliable", depth=1).resolved() == ("reliable", "volatile", 1)


HEARTBEAT = {
    "type": "heartbeat", "stamp": 1764233000.5, "cycle": 412, "state": "SAFE_STOP",
    "entities": {"cam": {"kind": "source", "status": "OK", "safety_relevant": False, "latched": False,
                         "violations": 0, "faults": 0, "last_alive_cycle": 411, "last_fault": None},
                 "det": {"kind": "model", "status": "EXPIRED", "safety_relevant": True, "latched": True,
                         "violations": 0, "faults": 3, "last_alive_cycle": None, "last_fault": "decoding failed"}},
    "newest_frame_age_ms": None, "frame_age_ms": {"cam": 35.5}, "fps": {"det": 24.5},
    "actions": ["invalidate_detections", "publish_status"],
}


def test_heartbeat_values():
    v = cv.heartbeat_values(HEARTBEAT)
    assert v["state"] == 3 and v["state_name"] == "SAFE_STOP" and v["cycle"] == 412
    assert math.isnan(v["newest_frame_age_ms"])
    assert v["frame_age_sources"] == ["cam"] and v["frame_age_ms"] == [35.5]
    assert v["fps_models"] == ["det"] and v["fps"] == [24.5]
    det = v["entities"][1]
    assert det == {"id": "det", "kind": "model", "status": "EXPIRED", "safety_relevant": True, "latched": True,
                   "faults": 3, "violations": 0, "last_alive_cycle": -1, "last_fault": "decoding failed"}


def test_diagnostics_levels_and_numbers():
    stats = {"models": {"det": {"fps": 24.5, "last_infer_ms": 30.1, "last_age_ms": 41.0, "published": 100,
                                "drops": {"cam": 3}, "stale_dropped": 1, "bad_frames": 0, "infer_errors": 0,
                                "decode_errors": 2}},
             "sources": {"cam": {"state": "running", "fps": 25.0, "frames": 104, "bad_frames": 0, "reconnects": 0,
                                 "overwritten": 4, "last_error": None}}}
    backends = {"det": ("onnxruntime[CUDAExecutionProvider]", "auto")}
    statuses = cv.diagnostic_statuses("edgeinfer", HEARTBEAT, stats, backends,
                                      ["incompatible QoS on /x: ... DURABILITY ..."], True)
    by_name = {name: (level, message, dict(values)) for name, level, message, values in statuses}
    level, message, values = by_name["edgeinfer: watchdog"]
    assert level == cv.ERROR and "det EXPIRED" in message and values["state"] == "SAFE_STOP"
    level, _, values = by_name["edgeinfer: model det"]
    assert level == cv.WARN  # decode errors, but frames still published
    assert values["drops"] == "3" and values["latency_ms"] == "41.00" and values["device"] == "gpu"
    assert by_name["edgeinfer: source cam"][2]["drops"] == "4"
    level, message, _ = by_name["edgeinfer: ros2"]
    assert level == cv.WARN and "DURABILITY" in message
    assert cv.diagnostic_statuses("edgeinfer", None, {}, {}, [], False)[0][1] == cv.STALE
    stats["sources"]["cam"]["lost"] = 21  # the middleware's message-lost event (best-effort fragments)
    statuses = cv.diagnostic_statuses("edgeinfer", HEARTBEAT, stats, {}, [], True)
    _, level, _, values = next(s for s in statuses if s[0] == "edgeinfer: source cam")
    assert level == cv.WARN and dict(values)["lost_in_transport"] == "21"
    stats["sources"]["cam"]["qos_events"] = ["incompatible QoS on /camera: ... RELIABILITY ..."]
    statuses = cv.diagnostic_statuses("edgeinfer", HEARTBEAT, stats, {}, [], True)
    _, level, message, _ = next(s for s in statuses if s[0] == "edgeinfer: source cam")
    assert level == cv.WARN and "RELIABILITY" in message


def test_draw_detections_leaves_the_frame_alone():
    frame = np.zeros((48, 64, 3), np.uint8)
    out = cv.draw_detections(frame, [Detection(2, "car", 0.9, (5.0, 5.0, 40.0, 30.0))])
    assert frame.max() == 0 and out[5, 20].any()


def test_draw_detections_tints_masks_and_dots_keypoints():
    frame = np.zeros((48, 64, 3), np.uint8)
    crop = np.zeros((10, 10), bool)
    crop[2:8, 2:8] = True
    with_mask = Instance(2, "car", 0.9, (30.0, 20.0, 40.0, 30.0), track_id=7,
                         mask=InstanceMask(30, 20, crop, 48, 64))
    person = Instance(0, "person", 0.8, (2.0, 2.0, 20.0, 40.0),
                      keypoints=np.array([[10.0, 10.0, 0.9], [15.0, 35.0, 0.1]]))
    out = cv.draw_detections(frame, [with_mask, person])
    assert frame.max() == 0
    assert out[25, 35].any() and not out[28, 38].any()  # inside the mask tinted, outside (in the box) not
    assert out[10, 10].any() and not out[35, 15].any()  # a seen keypoint drawn, an unseen one not


def image_msg(value: int, encoding: str = "bgr8", sec: int = 1_700_000_000, nanosec: int = 5, frame_id="cam_link"):
    data = np.full((4, 6, 3), value, np.uint8).tobytes()
    return SimpleNamespace(encoding=encoding, height=4, width=6, step=18, data=data,
                           header=SimpleNamespace(stamp=SimpleNamespace(sec=sec, nanosec=nanosec), frame_id=frame_id))


def test_ros2_source_keeps_the_newest_message_and_its_header():
    source = Ros2Source(Ros2SourceConfig(id="cam", topic="/camera/image_raw", frame_id="fallback"), FanOut([]))
    source._on_message(image_msg(10))
    source._on_message(image_msg(20, nanosec=7))  # replaces the unread one: a counted drop
    captured = source._read()
    assert source.overwritten == 1 and source.received == 2
    assert captured.image[0, 0, 0] == 20 and captured.frame_id == "cam_link"
    assert captured.wall == pytest.approx(1_700_000_000 + 7e-9, abs=1e-6)
    source._on_message(image_msg(30, frame_id=""))
    assert source._read().frame_id is None  # empty in the message: the source's own frame_id applies
    source._on_message(image_msg(1, encoding="yuv422"))
    with pytest.raises(BadFrame, match="unsupported encoding"):
        source._read()
    source.request_stop()
    assert source._read() is None  # a stopped read gives up instead of waiting for a message
