"""Bounded hand-off from sources to model workers.

Each model worker owns one `FrameSlots`: a one-frame slot per source it reads, guarded by one condition, so
the worker can wait on all its sources at once. A live source overwrites an unread frame (a counted drop:
the newest frame is the one worth processing); a file processed in order waits for the slot instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from typing import Protocol

from .frame import Frame


class FrameSink(Protocol):
    def put(self, frame: Frame, wait: bool) -> bool:
        """Deliver a frame. wait=False overwrites an unread one (counted drop); wait=True blocks until the
        slot is free. Returns False once the sink is closed (the source should stop)."""

    def end(self, source: str) -> None:
        """The source has no more frames (a file ended and does not loop)."""


class FrameSlots:
    def __init__(self, sources: Iterable[str]):
        self._cond = threading.Condition()
        self._slots: dict[str, Frame | None] = {s: None for s in sources}
        self._ended: set[str] = set()
        self._closed = False
        self._next = 0  # round-robin start, so one fast source cannot starve the others
        self._arrived: dict[str, float] = {}  # source -> when its waiting frame arrived (monotonic)
        self.drops: dict[str, int] = {s: 0 for s in self._slots}
        self.received: dict[str, int] = {s: 0 for s in self._slots}  # frames accepted (for in = out + dropped)

    def put(self, frame: Frame, wait: bool) -> bool:
        with self._cond:
            if wait:
                while self._slots[frame.source] is not None and not self._closed:
                    self._cond.wait()
            if self._closed:
                return False
            if self._slots[frame.source] is not None:
                self.drops[frame.source] += 1
            else:
                self._arrived[frame.source] = time.monotonic()
            self.received[frame.source] += 1
            self._slots[frame.source] = frame
            self._cond.notify_all()
            return True

    def end(self, source: str) -> None:
        with self._cond:
            self._ended.add(source)
            self._cond.notify_all()

    def take(self, max_frames: int, timeout: float, fill_wait: float = 0.0) -> list[Frame]:
        """Up to `max_frames` frames, at most one per source; [] on timeout, close, or when finished.

        `fill_wait` (s) is the batching deadline: once a frame is waiting, wait until `max_frames` sources (or
        every source still running) have one, but no longer than `fill_wait` after the oldest waiting frame
        arrived, then take what is there. Cameras out of phase then share an inference, and no frame waits in
        its slot more than `fill_wait` for the others."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._closed:
                ready = [s for s, f in self._slots.items() if f is not None]
                if ready:
                    live = len(self._slots) - len(self._ended - set(ready))
                    if fill_wait > 0 and len(ready) < min(max_frames, live):
                        left = min(self._arrived[s] for s in ready) + fill_wait - time.monotonic()
                        if left > 0:
                            self._cond.wait(left)
                            continue
                    return self._take_ready(max_frames)
                if self._ended.issuperset(self._slots):
                    return []
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                self._cond.wait(left)
            return []

    def _take_ready(self, max_frames: int) -> list[Frame]:
        names = list(self._slots)
        order = names[self._next :] + names[: self._next]
        self._next = (self._next + 1) % len(names)
        frames = []
        for s in order:
            f = self._slots[s]
            if f is not None and len(frames) < max_frames:
                frames.append(f)
                self._slots[s] = None
        self._cond.notify_all()  # wake sources waiting for a free slot
        return frames

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(self._slots)

    @property
    def finished(self) -> bool:
        """Every source ended and every frame was taken."""
        with self._cond:
            return self._ended.issuperset(self._slots) and all(f is None for f in self._slots.values())

    def pending(self) -> int:
        """Frames waiting in the slots (not yet taken by the worker)."""
        with self._cond:
            return sum(f is not None for f in self._slots.values())

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class FanOut:
    """The sink a source writes to: every model worker that reads this source gets the frame."""

    def __init__(self, targets: list[FrameSlots]):
        self._targets = targets

    def put(self, frame: Frame, wait: bool) -> bool:
        delivered = False
        for t in self._targets:
            delivered = t.put(frame, wait) or delivered
        return delivered

    def end(self, source: str) -> None:
        for t in self._targets:
            t.end(source)
