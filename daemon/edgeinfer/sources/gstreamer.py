"""A GStreamer pipeline ending in appsink (Jetson CSI cameras via nvarguscamerasrc, hardware decoders).

Needs an OpenCV built with GStreamer (JetPack's is; the PyPI wheels are not). Treated as live: when the
pipeline stops delivering it is torn down and rebuilt with backoff.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..health import HealthReporter
from ..mailbox import FrameSink
from .base import Source, SourceError
from .schema import GStreamerSourceConfig


def opencv_has_gstreamer() -> bool:
    return cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER)




class GStreamerSource(Source):
    # Without GStreamer in OpenCV no retry can ever succeed: refuse to start.
    preflight_problems_are_permanent = True

    def __init__(self, config: GStreamerSourceConfig, sink: FrameSink,
                 reporter: HealthReporter | None = None):
        super().__init__(config, sink, reporter)
        self.config: GStreamerSourceConfig = config
        self._cap: cv2.VideoCapture | None = None


    def describe(self) -> str:
        head = self.config.pipeline.split("!", 1)[0].strip()
        return f"gstreamer {head} ! ..."

    def preflight(self) -> list[str]:
        if not opencv_has_gstreamer():
            return ["pipeline: this OpenCV was built without GStreamer (cv2.getBuildInformation() says "
                    "'GStreamer: NO'); use the system OpenCV (e.g. JetPack's python3-opencv) or another "
                    "source type"]
        return []

    def _open(self) -> None:
        cap = cv2.VideoCapture(self.config.pipeline, cv2.CAP_GSTREAMER)
        if not cap.isOpened():
            cap.release()
            raise SourceError("GStreamer could not start the pipeline (try it with gst-launch-1.0)")
        self._cap = cap

    def _read(self) -> np.ndarray | None:
        if self._cap is None:
            return None
        ok, image = self._cap.read()
        return image if ok else None

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
