"""A camera that never connects is not OK by default (issue 8), run with the real daemon process.

Before: `min_fps` had no default, so the heartbeat said `state: OK` forever while no frame ever came.
"""

from __future__ import annotations

import numpy as np

from support.daemon_process import DaemonProcess, first
from support.tiny_models import constant_detector


def test_a_camera_that_never_connects_is_expired_and_the_daemon_degraded(tmp_path):
    model = constant_detector(tmp_path / "tiny.onnx", np.array([[32, 32, 10, 10, 0.9, 0.9]]))
    config = {
        "sources": [{"id": "cam", "type": "rtsp", "url": "rtsp://127.0.0.1:1/live",  # nothing listens on port 1
                     "open_timeout_ms": 500, "reconnect": {"initial_s": 0.2, "max_s": 0.5}}],
        "models": [{"id": "det", "path": str(model), "sources": ["cam"], "decoder": {"layout": "v5"}}],
        "watchdog": {"startup_grace_ms": 500},  # no min_fps anywhere: the defaults must catch it
    }
    daemon = DaemonProcess(tmp_path, config)
    try:
        beat = daemon.wait_for(lambda lines: first(lines, lambda r: r.get("type") == "heartbeat"
                                                   and r["entities"]["cam"]["status"] == "EXPIRED"), 30,
                               "a heartbeat with the camera EXPIRED")
        later = daemon.wait_for(lambda lines: first(lines, lambda r: r.get("type") == "heartbeat"
                                                    and r["cycle"] > beat["cycle"] + 40), 30, "40 more cycles")
        assert daemon.proc.poll() is None, "a dead camera must not stop the daemon"
    finally:
        daemon.stop()
    assert beat["state"] == "DEGRADED" and "alive" in beat["entities"]["cam"]["failing"]
    assert later["state"] == "DEGRADED" and beat["entities"]["det"]["status"] == "OK"
    assert not first(daemon.heartbeats(), lambda r: r["state"] == "OK" and r["cycle"] > 40)
    assert "DEGRADED" in daemon.stderr()
    assert "[tcp @" not in daemon.stderr_path.read_text()  # FFmpeg's raw "Connection refused" lines stay out
    statuses = [m["STATUS"] for _, m in daemon.notify.messages if "STATUS" in m]
    assert any("DEGRADED" in s for s in statuses), statuses
