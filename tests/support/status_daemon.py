"""The demo (YOLOv3-tiny on bikes.mp4) in a real daemon process with the http output, its frames sent by a
real ZeroMQ sender the test controls: stopping the sender is the injected fault (a camera that died)."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import cv2

from support.daemon_process import DaemonProcess
from support.rtsp_server import free_port

DEMO_PREPROCESS = {"resize": "stretch", "color": "rgb", "scale": 1 / 255}
DEMO_DECODER = {"type": "yolo", "layout": "v5", "conf_threshold": 0.25, "iou_threshold": 0.45}


def demo_frames(video: Path, limit: int | None = None) -> list:
    cap = cv2.VideoCapture(str(video))
    frames = []
    while limit is None or len(frames) < limit:
        ok, image = cap.read()
        if not ok:
            break
        frames.append(image)
    cap.release()
    return frames


class FrameFeeder:
    """Sends the demo's frames round and round at `fps` until stopped (or `count` sent)."""

    def __init__(self, endpoint: str, frames: list, fps: float = 10.0, count: int | None = None):
        from edgeinfer.transports.zmq.client import FrameSender

        self.sender = FrameSender(endpoint, source="cam", block=count is not None, sndhwm=4)
        self.frames, self.period, self.count = frames, 1.0 / fps, count
        self._stop = threading.Event()
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        i = 0
        next_at = time.monotonic()
        while not self._stop.is_set() and (self.count is None or i < self.count):
            self.sender.send(self.frames[i % len(self.frames)])
            i += 1
            next_at += self.period
            self._stop.wait(max(0.0, next_at - time.monotonic()))
        self.done.set()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sender.close()


class StatusDaemon:
    """A daemon process: source `cam` (ZeroMQ pull), model `yolov3-tiny`, outputs jsonl + http (+ extra)."""

    def __init__(self, tmp_path: Path, model, extra_outputs: list[dict] = (), http: dict | None = None,
                 watchdog: dict | None = None):
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        config = {
            "sources": [{"id": "cam", "type": "zmq", "endpoint": self.endpoint, "pattern": "pull"}],
            "models": [{"id": "yolov3-tiny", "path": str(model.onnx), "labels": str(model.labels),
                        "sources": ["cam"], "preprocess": DEMO_PREPROCESS, "decoder": DEMO_DECODER}],
        }
        if watchdog:
            config["watchdog"] = watchdog
        outputs = [{"type": "http", "port": 0, **(http or {})}, *extra_outputs]
        self.process = DaemonProcess(tmp_path, config, watchdog_usec=None, extra_outputs=outputs)
        self.url = self._wait_for_url()

    def _wait_for_url(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"status page on (http://\S+/)", self.process.stderr())
            if found:
                return found.group(1)
            if self.process.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.process.proc.returncode}):\n{self.process.stderr()}")
            time.sleep(0.05)
        raise AssertionError(f"no status page URL in the log:\n{self.process.stderr()}")

    def stop(self) -> int:
        return self.process.stop()
