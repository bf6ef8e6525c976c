"""Fault injection with the real daemon process: real ONNX models that hang or emit malformed outputs on a
white frame, a real RTSP camera that is killed and restarted, a real NOTIFY_SOCKET for systemd's protocol.

Reaction times are printed (pytest -s) for the notes; the assertions are about cycles and order, not speed.
"""

from __future__ import annotations

import math
import signal
import socket
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from support.daemon_process import DaemonProcess, first
from support.rtsp_server import RtspServerProcess, rtsp_server_unavailable
from support.tiny_models import constant_detector, hanging_detector, malformed_on_white_detector

ROWS = np.array([[32, 32, 16, 16, 0.9, 0.1, 0.8]], dtype=np.float32)
PERIOD_MS = 50


def image_folder(path: Path, white_at: int, count: int) -> Path:
    path.mkdir()
    for i in range(count):
        value = 255 if i == white_at else 20
        cv2.imwrite(str(path / f"frame_{i:03d}.png"), np.full((64, 64, 3), value, np.uint8))
    return path


def model_entry(path: Path, **extra) -> dict:
    return {"id": "det", "path": str(path), "sources": ["cam"],
            "decoder": {"type": "yolo", "layout": "v5", "conf_threshold": 0.5}, **extra}


def test_hung_model_reaches_safe_stop_within_deadline_plus_one_period_and_pings_stop(tmp_path):
    budget_ms = 200
    model = hanging_detector(tmp_path / "hang.onnx", ROWS)
    folder = image_folder(tmp_path / "images", white_at=10, count=20)
    config = {
        # in file order (not paced), so no frame is dropped however loaded the machine: the white one comes
        "sources": [{"id": "cam", "type": "images", "path": str(folder)}],
        "models": [model_entry(model, budget_ms=budget_ms)],
        "watchdog": {"period_ms": PERIOD_MS, "exit_code": 3},
    }
    daemon = DaemonProcess(tmp_path, config, watchdog_usec=200_000)  # pings every 100 ms
    try:
        safe = daemon.wait_for(lambda lines: first(lines, lambda r: r.get("state") == "SAFE_STOP"), 30,
                               "a SAFE_STOP heartbeat")
        code = daemon.proc.wait(10)
    finally:
        daemon.stop()
    assert code == 3, daemon.stderr()

    # exact to the cycle: the hung inference began at cycle b; SAFE_STOP is decided at the step of b + D
    det = safe["entities"]["det"]
    deadline_cycles = math.ceil(budget_ms / PERIOD_MS)
    assert det["status"] == "EXPIRED" and det["open_since_cycle"] is not None
    assert safe["cycle"] - det["open_since_cycle"] == deadline_cycles
    assert "exit" in safe["actions"] and "stop_watchdog_pings" in safe["actions"]

    records = daemon.records()
    published = [r["frame"] for r in records if r["status"] == "ok"]
    assert published == list(range(10)), "frames before the white one are published, in order"
    markers = [r for r in records if r["status"] == "invalid"]
    assert markers and markers[0]["model"] == "det" and markers[0]["source"] == "cam"
    assert "SAFE_STOP" in markers[0]["error"]

    # systemd's side: READY, pings while healthy, a SAFE_STOP status, then no ping ever again
    messages = [fields for _, fields in daemon.notify.messages]
    ready = first(range(len(messages)), lambda i: messages[i].get("READY") == "1")
    stop_status = first(range(len(messages)), lambda i: messages[i].get("STATUS", "").startswith("SAFE_STOP"))
    assert ready is not None and stop_status is not None and ready < stop_status
    pings = [i for i, m in enumerate(messages) if m.get("WATCHDOG") == "1"]
    assert any(ready < i < stop_status for i in pings), "no watchdog pings while healthy"
    assert all(i < stop_status for i in pings), "a watchdog ping after SAFE_STOP"
    assert any(m.get("STOPPING") == "1" for m in messages[stop_status:])

    # reaction time for the notes, on the heartbeats' own clock: from the heartbeat that closed the cycle in
    # which the hung inference began to the SAFE_STOP one (the begin itself lies up to one period earlier)
    began = first(daemon.heartbeats(), lambda b: b["cycle"] == det["open_since_cycle"])
    print(f"\n[hang] SAFE_STOP at cycle b + {safe['cycle'] - began['cycle']} (b = {began['cycle']}), "
          f"{safe['stamp'] - began['stamp']:.3f} s after the heartbeat of cycle b; bound from the begin: "
          f"budget {budget_ms} ms + period {PERIOD_MS} ms")


def test_decoder_exception_is_counted_fails_and_recovers(tmp_path):
    model = malformed_on_white_detector(tmp_path / "malformed.onnx", ROWS)
    # in file order, so no frame is dropped however loaded the machine; enough frames after the white one
    # for the daemon to live through the failing cycle and the next
    folder = image_folder(tmp_path / "images", white_at=8, count=160)
    config = {
        "sources": [{"id": "cam", "type": "images", "path": str(folder)}],
        "models": [model_entry(model, budget_ms=1000)],
        "watchdog": {"period_ms": PERIOD_MS, "fault_tolerance_cycles": 2},
    }
    daemon = DaemonProcess(tmp_path, config)
    try:
        code = daemon.proc.wait(30)
    finally:
        daemon.stop()
    assert code == 0, daemon.stderr()
    records = daemon.records()
    assert [r["frame"] for r in records] == list(range(160))
    errors = [r for r in records if r["status"] == "error"]
    assert [r["frame"] for r in errors] == [8]
    assert "decoding failed" in errors[0]["error"] and errors[0]["detections"] == []
    assert all(len(r["detections"]) == 1 for r in records if r["status"] == "ok")

    beats = daemon.heartbeats()
    failed = first(beats, lambda b: b["entities"]["det"]["status"] == "FAILED")
    assert failed is not None and failed["state"] == "FAULT" and failed["entities"]["det"]["faults"] == 1
    recovered = first(beats[beats.index(failed):], lambda b: b["entities"]["det"]["status"] == "OK")
    assert recovered is not None and recovered["state"] == "OK"
    assert recovered["cycle"] == failed["cycle"] + 1, "one failing cycle, then OK at the next step"
    assert all(b["state"] != "SAFE_STOP" for b in beats)


@pytest.mark.rtsp
def test_rtsp_camera_killed_degrades_then_recovers(tmp_path):
    reason = rtsp_server_unavailable()
    if reason:
        pytest.skip(reason)
    model = constant_detector(tmp_path / "det.onnx", ROWS)
    server = RtspServerProcess().start()
    config = {
        "sources": [{"id": "cam", "type": "rtsp", "url": server.url, "min_fps": 5, "read_timeout_ms": 1000,
                     "reconnect": {"initial_s": 0.2, "max_s": 1.0}}],
        "models": [model_entry(model, budget_ms=1000)],
        "watchdog": {"period_ms": PERIOD_MS, "startup_grace_ms": 500},
    }
    daemon = DaemonProcess(tmp_path, config)
    try:
        daemon.wait_for(lambda lines: first(lines, lambda r: r.get("state") == "OK" and r.get("frame_age_ms")
                                            and r["cycle"] > 10), 30, "an OK heartbeat with frames after the grace")
        killed_at = time.time()
        server.kill()
        degraded = daemon.wait_for(
            lambda lines: first(lines, lambda r: r.get("state") == "DEGRADED" and r["stamp"] > killed_at),
            20, "a DEGRADED heartbeat")
        assert degraded["entities"]["cam"]["status"] in ("FAILED", "EXPIRED")
        assert degraded["entities"]["det"]["status"] == "OK", "a dead camera is not the model's fault"
        expired = daemon.wait_for(
            lambda lines: first(lines, lambda r: r.get("state") == "DEGRADED" and r["stamp"] > killed_at
                                and r["entities"]["cam"]["status"] == "EXPIRED"
                                and "no alive indication" in (r["entities"]["cam"]["last_violation"] or "")),
            20, "the camera EXPIRED for want of frames")
        stale = daemon.wait_for(
            lambda lines: first(lines, lambda r: r["type"] == "heartbeat" and r["stamp"] > killed_at
                                and r["frame_age_ms"].get("cam", 0) > 1000), 20, "a heartbeat saying stale")
        restarted_at = time.time()
        server.start()
        recovered = daemon.wait_for(
            lambda lines: first(lines, lambda r: r.get("state") == "OK" and r["stamp"] > restarted_at
                                and r["entities"]["cam"]["last_alive_cycle"] > expired["cycle"]), 30,
            "an OK heartbeat with new frames after the restart")
        fresh = daemon.wait_for(
            lambda lines: first(lines, lambda r: r["type"] == "detections" and r["stamp"] > restarted_at), 10,
            "a record after the restart")
        assert fresh["status"] == "ok" and len(fresh["detections"]) == 1
        daemon.wait_for(
            lambda lines: first(lines, lambda r: r["type"] == "heartbeat" and r["stamp"] > restarted_at
                                and r["frame_age_ms"].get("cam", 1e9) < 500), 10, "a heartbeat saying fresh")
        assert all(b["state"] in ("OK", "DEGRADED") for b in daemon.heartbeats())
    finally:
        daemon.stop()
        server.stop()
    print(f"\n[rtsp] DEGRADED {degraded['stamp'] - killed_at:.3f} s after the kill (read error), camera EXPIRED "
          f"(no frames) at {expired['stamp'] - killed_at:.3f} s; stale heartbeat "
          f"(frame age {stale['frame_age_ms']['cam']:.0f} ms) at {stale['stamp'] - killed_at:.3f} s; OK again "
          f"{recovered['stamp'] - restarted_at:.3f} s after the server restart")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_latched_safe_stop_holds_until_sigusr1_or_the_zmq_reset_command(tmp_path):
    zmq = pytest.importorskip("zmq")
    model = malformed_on_white_detector(tmp_path / "malformed.onnx", ROWS)
    folder = tmp_path / "images"
    folder.mkdir()
    white = {10, 11, 12, 100, 101, 102}  # three in a row: a paced source may drop one, never all three
    for i in range(200):
        cv2.imwrite(str(folder / f"frame_{i:03d}.png"), np.full((64, 64, 3), 255 if i in white else 20, np.uint8))
    control = f"tcp://127.0.0.1:{free_port()}"
    config = {
        "sources": [{"id": "cam", "type": "images", "path": str(folder), "realtime": True, "fps": 25}],
        "models": [model_entry(model, budget_ms=1000)],
        "watchdog": {"period_ms": PERIOD_MS, "fault_tolerance_cycles": 0, "latch_safe_stop": True,
                     "on_safe_stop": ["publish_status", "invalidate_detections"]},
    }
    zmq_output = {"type": "zmq", "endpoint": "tcp://127.0.0.1:*", "control_endpoint": control}
    daemon = DaemonProcess(tmp_path, config, extra_outputs=[zmq_output])
    context = zmq.Context()
    try:
        first_stop = daemon.wait_for(lambda lines: first(lines, lambda r: r.get("state") == "SAFE_STOP"), 30,
                                     "the first SAFE_STOP")
        # latched: later clean frames are published as invalid, and the state stays until a reset
        daemon.wait_for(lambda lines: first(lines, lambda r: r["type"] == "detections" and r["frame"] is not None
                                            and r["frame"] >= 20 and r["status"] == "invalid"), 10,
                        "a clean frame published as invalid while latched")
        assert all(b["state"] == "SAFE_STOP" for b in daemon.heartbeats() if b["cycle"] >= first_stop["cycle"])
        reset_at = time.time()
        daemon.proc.send_signal(signal.SIGUSR1)
        daemon.wait_for(lambda lines: first(lines, lambda r: r.get("state") == "OK" and r["stamp"] > reset_at), 10,
                        "OK after SIGUSR1")
        daemon.wait_for(lambda lines: first(lines, lambda r: r["type"] == "detections" and r["stamp"] > reset_at
                                            and r["status"] == "ok"), 10, "valid records after SIGUSR1")

        second_stop = daemon.wait_for(
            lambda lines: first(lines, lambda r: r.get("state") == "SAFE_STOP" and r["stamp"] > reset_at), 30,
            "the second SAFE_STOP")
        daemon.wait_for(lambda lines: first(lines, lambda r: r["type"] == "detections" and r["frame"] is not None
                                            and r["frame"] >= 110 and r["status"] == "invalid"), 10,
                        "clean frames after the second white run, published as invalid")
        client = context.socket(zmq.REQ)
        client.setsockopt(zmq.LINGER, 0)
        client.setsockopt(zmq.RCVTIMEO, 5000)
        client.connect(control)
        client.send_json({"cmd": "status"})
        status = client.recv_json()
        assert status["ok"] and status["heartbeat"]["state"] == "SAFE_STOP"
        client.send_json({"cmd": "reset"})
        assert client.recv_json()["ok"]
        daemon.wait_for(lambda lines: first(lines, lambda r: r.get("state") == "OK"
                                            and r["cycle"] > second_stop["cycle"]), 10, "OK after the ZMQ reset")
    finally:
        context.destroy(linger=0)
        daemon.stop()
