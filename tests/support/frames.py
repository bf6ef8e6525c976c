"""Test stand-ins around the real frame mailbox: a consumer that takes frames as a model worker would, and a
reporter that records what sources report."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import cv2

from edgeinfer.frame import Frame
from edgeinfer.health import NullReporter
from edgeinfer.mailbox import FrameSlots


class RecordingReporter(NullReporter):
    def __init__(self) -> None:
        self.alive_count = 0
        self.faults: list[tuple[str, str]] = []

    def alive(self, entity: str) -> None:
        self.alive_count += 1

    def fault(self, entity: str, message: str) -> None:
        self.faults.append((entity, message))


class Consumer:
    """Takes frames from the real mailbox, optionally slowly. `keep_pixels=False` keeps a 1x1 crop only, for
    long live streams."""

    def __init__(self, slots: FrameSlots, delay_s: float = 0.0, keep_pixels: bool = True):
        self.slots = slots
        self.delay_s = delay_s
        self.keep_pixels = keep_pixels
        self.frames: list[Frame] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            taken = self.slots.take(1, timeout=0.05)
            if taken:
                for f in taken:
                    image = f.image if self.keep_pixels else f.image[:1, :1].copy()
                    self.frames.append(replace(f, image=image))  # the header as it came (stream too)
                if self.delay_s:
                    time.sleep(self.delay_s)
            elif self.slots.finished:
                return

    def wait_for(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.frames) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return len(self.frames) >= count

    def wait_finished(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def count_after(self, mono: float) -> int:
        return sum(1 for f in self.frames if f.mono > mono)

    def close(self) -> None:
        self._stop.set()
        self.slots.close()
        self._thread.join(2)


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll `condition` until it holds or `timeout` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def save_video_frames(video: Path, indices: tuple[int, ...], folder: Path) -> list:
    """Frames `indices` (ascending) of `video`, each also written to `folder` as NNN.png (an `images` source
    reads them in that order); the images in that order."""
    capture = cv2.VideoCapture(str(video))
    images, index = [], 0
    folder.mkdir()
    while len(images) < len(indices):
        ok, image = capture.read()
        assert ok
        if index in indices:
            cv2.imwrite(str(folder / f"{index:03d}.png"), image)
            images.append(image)
        index += 1
    capture.release()
    return images
