"""A moving test pattern, paced at `fps`: for demos, benchmarks and tests without a camera.

Each frame is a scrolling colour gradient with a rectangle moving across it and the frame number drawn
in the corner, so a stuck or reordered stream is visible at a glance.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..health import HealthReporter
from ..mailbox import FrameSink
from .base import Source
from .schema import SyntheticSourceConfig

RECT_COLOUR = (40, 200, 255)  # BGR: orange
TEXT_COLOUR = (255, 255, 255)




def _gradient(height: int, width: int) -> np.ndarray:
    """A background twice as wide as the frame (blue rising, red falling, green by row), so each frame can
    be a shifted window of it."""
    x = np.linspace(0, 255, 2 * width, dtype=np.float32)
    y = np.linspace(0, 255, height, dtype=np.float32)
    image = np.empty((height, 2 * width, 3), np.uint8)
    image[:, :, 0] = x[None, :]
    image[:, :, 1] = y[:, None] * 0.6
    image[:, :, 2] = 255 - x[None, :]
    return image


class SyntheticSource(Source):
    def __init__(self, config: SyntheticSourceConfig, sink: FrameSink,
                 reporter: HealthReporter | None = None):
        super().__init__(config, sink, reporter)
        self.config: SyntheticSourceConfig = config
        self._background = _gradient(config.height, config.width)
        self._rect_w = max(config.width // 6, 4)
        self._rect_h = max(config.height // 4, 4)
        self._font_scale = max(config.height / 480.0, 0.4)
        self._rendered = 0


    @property
    def pace_fps(self) -> float | None:
        return self.config.fps

    @property
    def wait_for_consumer(self) -> bool:
        # A counted run (benchmarks, tests) wants every frame processed; an endless one behaves like a camera.
        return self.finite

    def describe(self) -> str:
        count = f", {self.config.frames} frames" if self.finite else ""
        return f"synthetic {self.config.width}x{self.config.height} at {self.config.fps:g} fps{count}"

    def _open(self) -> None:
        self._rendered = 0

    def _read(self) -> np.ndarray | None:
        if self.config.frames is not None and self._rendered >= self.config.frames:
            return None
        index = self._rendered
        self._rendered += 1
        width, height = self.config.width, self.config.height
        # A fresh array per frame: the previous one may still be waiting in a mailbox or being inferred.
        offset = index % width
        image = self._background[:, offset:offset + width].copy()
        travel = width - self._rect_w
        x = index * 4 % (2 * travel) if travel > 0 else 0
        x = 2 * travel - x if x > travel else x  # bounce between the edges
        y = (height - self._rect_h) // 2
        cv2.rectangle(image, (x, y), (x + self._rect_w - 1, y + self._rect_h - 1), RECT_COLOUR, cv2.FILLED)
        cv2.putText(image, str(index), (8, int(30 * self._font_scale) + 4), cv2.FONT_HERSHEY_SIMPLEX,
                    self._font_scale, TEXT_COLOUR, max(int(2 * self._font_scale), 1), cv2.LINE_AA)
        return image

    def _close(self) -> None:
        pass
