"""A local camera (V4L2 on Linux): by index or by device path, e.g. /dev/v4l/by-id/... (stable across
reboots and USB re-plugging, unlike the index)."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import cv2
import numpy as np

from ..health import HealthReporter
from ..mailbox import FrameSink
from .base import Source, SourceError
from .schema import CameraSourceConfig

log = logging.getLogger(__name__)




class CameraSource(Source):
    def __init__(self, config: CameraSourceConfig, sink: FrameSink, reporter: HealthReporter | None = None):
        super().__init__(config, sink, reporter)
        self.config: CameraSourceConfig = config
        self._cap: cv2.VideoCapture | None = None
        self._reported_format = False


    def device_path(self) -> Path | None:
        """The device node (Linux), or None where cameras have no node to check."""
        device = self.config.device
        if isinstance(device, str):
            return Path(device)
        return Path(f"/dev/video{device}") if sys.platform.startswith("linux") else None

    def describe(self) -> str:
        return f"camera {self.config.device}"

    def preflight(self) -> list[str]:
        node = self.device_path()
        if node is None:
            return []
        if not node.exists():
            return [f"device: no camera at {node} (unplugged? see `v4l2-ctl --list-devices`)"]
        if not os.access(node, os.R_OK | os.W_OK):
            return [f"device: no permission to open {node} (add the user to the 'video' group)"]
        return []

    def _open(self) -> None:
        device = self.config.device
        if isinstance(device, str):
            device = os.path.realpath(device)  # by-id/by-path links point at the /dev/videoN node
        api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        cap = cv2.VideoCapture(device, api)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open camera {self.config.device}")
        # The pixel format goes first: it decides which sizes and rates the camera offers.
        if self.config.fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.config.fourcc))
        if self.config.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.config.width)
        if self.config.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.config.height)
        if self.config.fps:
            cap.set(cv2.CAP_PROP_FPS, self.config.fps)
        if not self._reported_format:
            # Cameras silently pick the nearest mode they support: say what we got, once.
            self._reported_format = True
            log.info("source '%s': camera %s gives %dx%d at %.1f fps", self.id, self.config.device,
                     int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                     cap.get(cv2.CAP_PROP_FPS))
        self._cap = cap

    def _read(self) -> np.ndarray | None:
        if self._cap is None:
            return None
        ok, image = self._cap.read()
        return image if ok else None  # unplugged: reopen with backoff

    def _close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None
