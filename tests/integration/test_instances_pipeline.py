"""Tracks, masks and keypoints through the whole pipeline (real ONNX Runtime sessions on small models with
known Ultralytics segment / pose outputs, a synthetic source, the JSONL file and the ZeroMQ PUB socket on
loopback): every record carries what the ROS test checks on DDS, and ZeroMQ carries the same records."""

from __future__ import annotations

import json
import socket
import threading

import numpy as np
import pytest

from edgeinfer import rle
from edgeinfer.config import parse_config
from edgeinfer.preprocess import fit_transform
from support.pipeline_run import run_pipeline
from support.yolo_heads import INPUT, instance_models, pose_outputs, reference_masks, segment_outputs

zmq = pytest.importorskip("zmq")
FRAMES = 50


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_records_carry_track_ids_masks_and_keypoints_on_jsonl_and_zeromq(tmp_path):
    segmenter, poser = instance_models(tmp_path)
    head, protos = segment_outputs()  # the answers the models give, for the expected masks and keypoints
    _, keypoints = pose_outputs()
    port = free_port()
    config = parse_config(json.dumps({
        "sources": [{"id": "cam", "type": "synthetic", "width": 128, "height": 64, "fps": 50, "frames": FRAMES}],
        "models": [{"id": "seg", "path": str(segmenter), "sources": ["cam"], "tracker": {"type": "bytetrack"}},
                   {"id": "pose", "path": str(poser), "sources": ["cam"], "tracker": {}}],
        "outputs": [{"type": "jsonl", "path": str(tmp_path / "out.jsonl"), "heartbeat": False},
                    {"type": "zmq", "endpoint": f"tcp://127.0.0.1:{port}", "control_endpoint": None,
                     "heartbeat": False, "sndhwm": 1000}]}))
    context = zmq.Context.instance()
    sub = context.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{port}")  # before the PUB binds: it joins as soon as the pipeline opens
    received: list[dict] = []
    done = threading.Event()

    def listen() -> None:
        poller = zmq.Poller()
        poller.register(sub, zmq.POLLIN)
        while not done.is_set():
            if poller.poll(50):
                received.append(json.loads(sub.recv_multipart()[-1]))

    listener = threading.Thread(target=listen)
    listener.start()
    try:
        reason, _ = run_pipeline(config, timeout=60)
    finally:
        done.set()
        listener.join()
        sub.close()
    assert reason == "end-of-input"
    records = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    seg = [r for r in records if r["model"] == "seg"]
    pose = [r for r in records if r["model"] == "pose"]
    assert len(seg) == len(pose) == FRAMES

    transform = fit_transform(128, 64, INPUT, INPUT, "letterbox")
    expected_masks = reference_masks(head, protos, transform, keep=[0, 1])
    for record in seg:
        assert [(d["label"], d["track_id"], d["track_age"]) for d in record["detections"]] == [
            ("ball", 1, record["frame"] + 1), ("person", 2, record["frame"] + 1)]
        for detection, expected in zip(record["detections"], expected_masks, strict=True):
            mask = rle.decode(detection["mask"])
            assert np.count_nonzero(mask & expected) / np.count_nonzero(mask | expected) >= 0.97
    for record in pose:
        [person] = record["detections"]
        assert person["track_id"] == 1 and len(person["keypoints"]) == 17
        expected_x = (keypoints[:, 0] - transform.pad_x) / transform.scale_x
        np.testing.assert_allclose([k[0] for k in person["keypoints"]], expected_x, atol=0.051)
    # ZeroMQ: the same records (a subscriber joining late misses the first ones, never gets others)
    by_key = {(r["model"], r["frame"]): r for r in records}
    assert len(received) >= FRAMES  # of 2 x FRAMES: 1 s of frames, a join takes some ms
    for record in received:
        assert record == by_key[(record["model"], record["frame"])]
