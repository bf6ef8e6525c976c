"""ROS 2 over real DDS (Fast DDS from the ROS 2 Kilted wheels): the daemon in one process, a peer
(support/ros_peer.py) in another, on a ROS_DOMAIN_ID of this test run. vision_msgs comes from the test
fixture package (tests/fixtures/ros/vision_msgs) and edgeinfer_msgs from ros2_ws, both built by `make ros`.
Skipped (not failed) where rclpy or the built interfaces are missing."""

from __future__ import annotations

import py_compile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from support.daemon_process import DaemonProcess, first
from support.ros import ROOT, RosPeer, ros_env, ros_unavailable, stamp_s
from support.tiny_models import malformed_on_white_detector

needs_ros = pytest.mark.skipif(ros_unavailable() is not None, reason=str(ros_unavailable()))

MODEL = "yolov3-tiny"
TOPIC_MODEL = "yolov3_tiny"  # ROS names have no '-'
DETECTIONS = f"/edgeinfer/{TOPIC_MODEL}/detections"
DEFAULT_QOS = {"reliability": "reliable", "durability": "volatile", "depth": 1000}
SENSOR_QOS = {"reliability": "best_effort", "durability": "volatile", "depth": 1000}


def demo_model_entry(demo_model, source: str) -> dict:
    return {
        "id": MODEL, "path": str(demo_model.onnx), "labels": str(demo_model.labels), "sources": [source],
        # a shared 2-core box can stretch one inference to seconds; the watchdog is not under test here
        "budget_ms": 30000,
        "preprocess": {"resize": "stretch", "color": "rgb", "scale": 1 / 255},
        "decoder": {"type": "yolo", "layout": "v5", "conf_threshold": 0.25, "iou_threshold": 0.45},
    }


def subscription(name: str, topic: str, kind: str, qos: dict) -> dict:
    return {"name": name, "topic": topic, "type": kind, "qos": qos}


@needs_ros
def test_every_demo_frame_arrives_as_detection2darray_for_default_and_sensor_data_subscribers(
        tmp_path, demo_model, demo_video):
    peer = RosPeer({"subscribe": [
        subscription("default", DETECTIONS, "vision_msgs/msg/Detection2DArray", DEFAULT_QOS),
        subscription("sensor", DETECTIONS, "vision_msgs/msg/Detection2DArray", SENSOR_QOS),
        subscription("image", f"/edgeinfer/{TOPIC_MODEL}/annotated", "sensor_msgs/msg/Image", SENSOR_QOS),
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
    ros_output = {"type": "ros2", "wait_for_subscribers": 2, "wait_timeout_s": 30,
                  "image": {"enabled": True, "format": "raw", "rate_hz": 5}}
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
        images = [e["msg"] for e in peer.messages("image")]
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
    default_stamps = np.array([stamp_s(m) for m in msgs])
    assert len(sensor) >= 240
    assert all(np.abs(default_stamps - stamp_s(e["msg"])).min() < 1e-9 for e in sensor)

    # annotated images at most rate_hz, each stamped like the frame it shows
    assert images and all(m["encoding"] == "bgr8" and (m["width"], m["height"]) == (640, 272)
                          and m["data"]["len"] == 640 * 272 * 3 for m in images)
    frame_stamps = np.array([r["stamp"] for r in records])
    assert all(np.abs(frame_stamps - stamp_s(m)).min() < 2e-6 for m in images)
    span = records[-1]["stamp"] - records[0]["stamp"]
    assert len(images) <= span * 5 + 2, (len(images), span)

    # names through LabelInfo: class 2 is "car" in coco.names
    assert labels, "no LabelInfo (transient local) for a subscriber that joined before the publisher"
    class_map = {c["class_id"]: c["class_name"] for c in labels[-1]["msg"]["class_map"]}
    assert len(class_map) == 80 and class_map[2] == "car" and class_map[0] == "person"
    names = {class_map[int(d["results"][0]["hypothesis"]["class_id"])] for m in msgs for d in m["detections"]}
    assert {"car", "person"} <= names


def run_node(tmp_path: Path, config: dict, *ros_args: str):
    """The daemon through the edgeinfer_ros entry point (as `ros2 run` starts it), JSONL beside ROS."""
    import subprocess
    import sys

    import yaml

    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    stderr = (tmp_path / "node.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "edgeinfer_ros.node", "--ros-args",
                             "-p", f"config_file:={config_path}", *ros_args],
                            env=ros_env(), stdout=subprocess.DEVNULL, stderr=stderr)
    return proc, stderr


@needs_ros
def test_image_topics_from_another_process_are_detected_with_their_stamp_and_frame_id(
        tmp_path, demo_model, demo_video):
    encodings = ["rgb8", "bgr8", "mono8", "rgba8", "bgra8"]
    topic = "/robot1/edgeinfer/yolov3_tiny/detections"
    peer = RosPeer({
        "subscribe": [subscription("det", topic, "vision_msgs/msg/Detection2DArray", DEFAULT_QOS)],
        "publish_images": [
            # one frame with three cars (frame 140), in every encoding; each image once the previous one
            # came back as detections, so newest-frame semantics drop none however slow the box
            {"topic": "/camera/image_raw", "video": str(demo_video), "start_frame": 140, "frames": 1,
             "count": 10, "fps": 10, "encodings": encodings, "frame_id": "cam_optical", "lockstep": 20,
             "settle_s": 1.0, "qos": {"reliability": "reliable"}},
            {"topic": "/camera/image_raw/compressed", "video": str(demo_video), "start_frame": 140, "frames": 1,
             "count": 4, "fps": 10, "encodings": ["jpeg", "png"], "frame_id": "cam_optical", "lockstep": 20,
             "settle_s": 1.0, "qos": {"reliability": "reliable"}},
        ]}, tmp_path / "peer.log")
    out = tmp_path / "out.jsonl"
    config = {
        # reliable on both ends: Fast DDS over UDP loses fragments of large best-effort images (docs/benchmarks.md)
        "sources": [{"id": "cam", "type": "ros2", "topic": "/camera/image_raw", "qos": {"preset": "default"}},
                    {"id": "camz", "type": "ros2", "topic": "/camera/image_raw/compressed",
                     "transport": "compressed", "qos": {"preset": "default"}}],
        "models": [demo_model_entry(demo_model, "cam") | {"sources": ["cam", "camz"]}],
        "outputs": [{"type": "jsonl", "path": str(out)}, {"type": "ros2"}],
    }
    proc, stderr = run_node(tmp_path, config, "-r", "__ns:=/robot1")
    try:
        for t in ("/camera/image_raw", "/camera/image_raw/compressed"):
            peer.wait_for(lambda ev, t=t: first(ev, lambda e: e["event"] == "published_all" and e["topic"] == t),
                          120, f"the peer to publish every image on {t}")
        time.sleep(2.0)  # the last frames through the model
        published = [e for e in peer.snapshot() if e["event"] == "published"]
        received = [e["msg"] for e in peer.messages("det")]
    finally:
        proc.terminate()
        code = proc.wait(15)
        stderr.close()
        peer.stop()
    log = (tmp_path / "node.log").read_text()
    assert code == 0, log[-3000:]
    assert received, f"no detections on {topic}:\n{log[-3000:]}"

    # the stamp each image was published with comes back on its detections (float64 seconds inside: < 1 us)
    by_stamp = {e["stamp_ns"]: e for e in published}
    matched = []
    for msg in received:
        ns = msg["header"]["stamp"]["sec"] * 1_000_000_000 + msg["header"]["stamp"]["nanosec"]
        near = min(by_stamp, key=lambda s: abs(s - ns))
        assert abs(near - ns) <= 1000, f"detections stamped {ns}, no image published within 1 us of it"
        assert msg["header"]["frame_id"] == "cam_optical"
        matched.append((by_stamp[near], msg))
    # in lockstep every image comes back; one per stream may be lost while discovery settles (a 20 s stall)
    assert len(published) == 14 and len(matched) >= len(published) - 2, (len(matched), len(published))
    cars = {e["encoding"] for e, msg in matched
            if any(d["results"][0]["hypothesis"]["class_id"] == "2" for d in msg["detections"])}
    assert cars == set(encodings) | {"jpeg", "png"}, cars
    # lossless encodings hold the same pixels once converted: exactly the same detections
    def boxes(msg):
        return sorted((d["results"][0]["hypothesis"]["class_id"], round(d["bbox"]["center"]["position"]["x"], 3),
                       round(d["bbox"]["center"]["position"]["y"], 3), round(d["bbox"]["size_x"], 3))
                      for d in msg["detections"])
    lossless = {}
    for event, msg in matched:
        if event["encoding"] in ("bgr8", "rgb8", "rgba8", "bgra8", "png"):
            lossless.setdefault(event["encoding"], boxes(msg))
    assert len(set(map(tuple, lossless.values()))) == 1, lossless

    # the JSONL output of the same run carries the same stamps, and the age counts from the image's stamp
    import json

    records = [json.loads(line) for line in out.read_text().splitlines()]
    detections = [r for r in records if r["type"] == "detections"]
    # JSONL rounds to 1 us, and a float64 of today's epoch seconds resolves only 0.24 us: a stamp that went
    # through ROS's sec/nanosec and back may round to the neighbouring microsecond
    jsonl_stamps = sorted(r["stamp"] for r in detections)
    missing = [stamp_s(m) for _, m in matched if min(abs(s - stamp_s(m)) for s in jsonl_stamps) > 1.5e-6]
    assert not missing, missing
    assert all(0 <= r["age_ms"] < 5000 for r in detections)


@needs_ros
def test_heartbeat_every_cycle_reset_service_diagnostics_and_incompatible_qos(tmp_path):
    rows = np.array([[32, 32, 16, 16, 0.9, 0.1, 0.8]], dtype=np.float32)
    model = malformed_on_white_detector(tmp_path / "malformed.onnx", rows)
    folder = tmp_path / "images"
    folder.mkdir()
    white = {10, 11, 12}  # three in a row: a paced source may drop one, never all three
    for i in range(400):
        cv2.imwrite(str(folder / f"frame_{i:03d}.png"), np.full((64, 64, 3), 255 if i in white else 20, np.uint8))
    config = {
        "sources": [{"id": "cam", "type": "images", "path": str(folder), "realtime": True, "fps": 25}],
        "models": [{"id": "det", "path": str(model), "sources": ["cam"], "budget_ms": 1000,
                    "decoder": {"type": "yolo", "layout": "v5", "conf_threshold": 0.5}}],
        "watchdog": {"period_ms": 50, "fault_tolerance_cycles": 0, "latch_safe_stop": True,
                     "on_safe_stop": ["publish_status", "invalidate_detections"]},
    }
    peer = RosPeer({"subscribe": [
        subscription("hb", "/edgeinfer/heartbeat", "edgeinfer_msgs/msg/Heartbeat", DEFAULT_QOS),
        subscription("diag", "/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", DEFAULT_QOS),
        subscription("det", "/edgeinfer/det/detections", "vision_msgs/msg/Detection2DArray", DEFAULT_QOS),
        # asks for what the detections publisher does not offer: DURABILITY transient local
        subscription("incompatible", "/edgeinfer/det/detections", "vision_msgs/msg/Detection2DArray",
                     {"reliability": "reliable", "durability": "transient_local", "depth": 10}),
    ]}, tmp_path / "peer.log")
    peer.wait_for(lambda ev: first(ev, lambda e: e["event"] == "ready"), 30, "the peer")
    daemon = DaemonProcess(tmp_path, config, env=ros_env(), watchdog_usec=None,
                           extra_outputs=[{"type": "ros2", "wait_for_subscribers": 1, "wait_timeout_s": 30}])

    def heartbeats(ev):
        return [e["msg"] for e in ev if e.get("name") == "hb"]

    try:
        stop = peer.wait_for(lambda ev: first(heartbeats(ev), lambda m: m["state_name"] == "SAFE_STOP"), 60,
                             "a SAFE_STOP heartbeat over ROS")
        assert stop["state"] == 3 and "invalidate_detections" in stop["actions"]
        det = first(stop["entities"], lambda e: e["id"] == "det")
        assert det["status"] == "EXPIRED" and det["latched"] and "decod" in det["last_fault"]
        # latched: no Detection2DArray for invalid frames (an empty one would claim "nothing there")
        time.sleep(1.0)
        n_det = len(peer.messages("det"))
        time.sleep(1.0)
        assert len(peer.messages("det")) == n_det
        assert all(m["state_name"] == "SAFE_STOP" for m in heartbeats(peer.snapshot()) if m["cycle"] >= stop["cycle"])

        peer.send({"cmd": "call", "service": "/edgeinfer/reset"})
        reply = peer.wait_for(lambda ev: first(ev, lambda e: e["event"] == "call"), 30, "the reset reply")
        assert reply["success"] is True, reply
        ok = peer.wait_for(lambda ev: first(heartbeats(ev), lambda m: m["state_name"] == "OK"
                                            and m["cycle"] > stop["cycle"]), 20, "OK after the reset service")
        peer.wait_for(lambda ev: len(peer.messages("det")) > n_det, 20, "detections again after the reset")

        # lifecycle: deactivate pauses detections while the heartbeat goes on; activate resumes them
        peer.send({"cmd": "lifecycle", "service": "/edgeinfer/change_state", "transition": "deactivate"})
        assert peer.wait_for(lambda ev: first(ev, lambda e: e["event"] == "lifecycle"), 30, "deactivate")["success"]
        time.sleep(0.5)
        paused_det, paused_hb = len(peer.messages("det")), len(heartbeats(peer.snapshot()))
        time.sleep(1.0)
        assert len(peer.messages("det")) == paused_det, "detections published while inactive"
        assert len(heartbeats(peer.snapshot())) > paused_hb + 5, "the heartbeat must go on while inactive"
        peer.send({"cmd": "lifecycle", "service": "/edgeinfer/change_state", "transition": "activate"})
        peer.wait_for(lambda ev: len([e for e in ev if e["event"] == "lifecycle"]) == 2, 30, "activate")
        peer.wait_for(lambda ev: len(peer.messages("det")) > paused_det, 20, "detections after activate")
        diag = peer.wait_for(lambda ev: first([e["msg"] for e in ev if e.get("name") == "diag"][::-1],
                                              lambda m: any("DURABILITY" in s["message"] for s in m["status"])
                                              and any(s["name"].endswith("model det") for s in m["status"])),
                             20, "/diagnostics naming the incompatible policy")
        incompatible = first(peer.snapshot(), lambda e: e["event"] == "incompatible_qos")
        jsonl_beats = daemon.heartbeats()
        stderr = daemon.stderr()
    finally:
        daemon.stop()
        peer.stop()

    # every cycle: consecutive cycle numbers over ROS, the same cycles and states as the JSONL heartbeats
    beats = heartbeats(peer.snapshot())
    cycles = [m["cycle"] for m in beats]
    if len(cycles) > 1 and cycles[-1] == cycles[-2]:
        cycles.pop()  # the final heartbeat, sent once everything stopped, repeats the last cycle with the final counts
    assert cycles == list(range(cycles[0], cycles[0] + len(cycles))), "a heartbeat cycle is missing over ROS"
    jsonl_state = {b["cycle"]: b["state"] for b in jsonl_beats}
    assert all(jsonl_state[m["cycle"]] == m["state_name"] for m in beats if m["cycle"] in jsonl_state)
    assert ok["fps_models"] == ["det"] and ok["frame_age_sources"] == ["cam"]
    assert ok["newest_frame_age_ms"] is not None and ok["newest_frame_age_ms"] >= 0  # NaN: nothing yet

    # /diagnostics: the watchdog state, the model's numbers, backend and device, the QoS problem
    status = {s["name"]: s for s in diag["status"]}
    values = {kv["key"]: kv["value"] for kv in status["edgeinfer: model det"]["values"]}
    assert {"fps", "latency_ms", "infer_ms", "drops", "backend", "device"} <= set(values)
    assert values["backend"].startswith("onnxruntime") and values["device"] == "cpu"
    assert float(values["fps"]) > 0 and float(values["latency_ms"]) > 0
    watchdog = {kv["key"]: kv["value"] for kv in status["edgeinfer: watchdog"]["values"]}
    assert watchdog["state"] in ("OK", "DEGRADED", "FAULT", "SAFE_STOP")
    ros = status["edgeinfer: ros2"]
    assert ros["level"] == [1] and "DURABILITY" in ros["message"] and "detections" in ros["message"]
    assert "incompatible QoS" in stderr and "DURABILITY" in stderr
    assert incompatible is not None and incompatible["policy"] == "DURABILITY"


def test_launch_file_compiles():
    # `launch` and `launch_ros` are not on PyPI: the launch file is compiled here, never run
    py_compile.compile(str(ROOT / "ros2_ws/src/edgeinfer_ros/launch/edgeinfer.launch.py"), doraise=True)


def test_without_the_interfaces_run_says_what_is_missing_and_how_to_get_it(tmp_path, demo_model):
    """No ROS environment at all (neither the built interfaces nor, maybe, rclpy): exit 1, naming the fix."""
    import os
    import subprocess
    import sys

    import yaml

    config = {"sources": [{"id": "cam", "type": "ros2", "topic": "/camera/image_raw"}],
              "models": [demo_model_entry(demo_model, "cam")], "outputs": [{"type": "ros2"}]}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AMENT_PREFIX_PATH", "LD_LIBRARY_PATH")}
    env["ROS_DOMAIN_ID"] = ros_env()["ROS_DOMAIN_ID"]
    proc = subprocess.run([sys.executable, "-m", "edgeinfer", "run", str(path)], env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert ("vision_msgs" in proc.stderr and "make ros" in proc.stderr) or "rclpy" in proc.stderr, proc.stderr


@needs_ros
def test_node_entry_point_needs_the_config_file_parameter(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "edgeinfer_ros.node", "--ros-args", "-p", "max_frames:=3"],
                          env=ros_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "config_file" in proc.stderr, proc.stderr


@needs_ros
def test_a_best_effort_camera_and_a_reliable_source_is_reported_naming_reliability(tmp_path, demo_model, demo_video):
    # a plain node this time (lifecycle: off) with its own name
    peer = RosPeer({
        "subscribe": [subscription("diag", "/diagnostics", "diagnostic_msgs/msg/DiagnosticArray", DEFAULT_QOS)],
        "publish_images": [{"topic": "/cam/image_raw", "video": str(demo_video), "frames": 1, "count": 50,
                            "fps": 5, "qos": {"reliability": "best_effort"}, "wait_subscribers_s": 0}]},
        tmp_path / "peer.log")
    config = {
        "sources": [{"id": "cam", "type": "ros2", "topic": "/cam/image_raw"}],  # the default QoS: reliable
        "models": [demo_model_entry(demo_model, "cam")],
        "ros": {"node_name": "detector", "lifecycle": "off"},
    }
    daemon = DaemonProcess(tmp_path, config, env=ros_env(), watchdog_usec=None, extra_outputs=[{"type": "ros2"}])
    try:
        diag = peer.wait_for(lambda ev: first([e["msg"] for e in ev if e.get("name") == "diag"][::-1],
                                              lambda m: any(s["name"] == "detector: source cam"
                                                            and "RELIABILITY" in s["message"] for s in m["status"])),
                             60, "/diagnostics naming RELIABILITY for the source")
        stderr = daemon.stderr()
        records = daemon.records()
    finally:
        daemon.stop()
        peer.stop()
    status = first(diag["status"], lambda s: s["name"] == "detector: source cam")
    assert status["level"] == [1]
    assert "incompatible QoS on /cam/image_raw" in stderr and "RELIABILITY" in stderr
    assert records == []  # nothing matched, nothing published
    ros = first(diag["status"], lambda s: s["name"] == "detector: ros2")
    assert "publishing" in ros["message"]  # a plain node publishes from the start


@needs_ros
def test_node_entry_point_reads_the_shipped_params_file_for_a_namespaced_node(tmp_path):
    import subprocess
    import sys

    shipped = (ROOT / "ros2_ws/src/edgeinfer_ros/config/params.yaml").read_text()
    params = tmp_path / "params.yaml"
    params.write_text(shipped.replace("/etc/edgeinfer/config.yaml", str(tmp_path / "missing.yaml")))
    proc = subprocess.run([sys.executable, "-m", "edgeinfer_ros.node", "--ros-args", "--params-file", str(params),
                           "-r", "__ns:=/robot1"], env=ros_env(), capture_output=True, text=True, timeout=120)
    # the config_file from the params file reached the daemon, which cannot read it: a config error, exit 2
    assert proc.returncode == 2 and "missing.yaml" in proc.stderr, proc.stderr
