"""A virtual monotonic clock and a matching sleep, for driving the threaded watchdog supervisor exactly."""

from __future__ import annotations

import threading


class VirtualTime:
    """A clock the test moves by hand, and a sleep that blocks until the clock reaches its wake time."""

    def __init__(self, start: float = 1000.0):
        self._now = start
        self._cond = threading.Condition()
        self._wake_at: float | None = None
        self._released = False
        self.sleeps: list[float] = []

    def clock(self) -> float:
        with self._cond:
            return self._now

    def sleep(self, seconds: float) -> None:
        with self._cond:
            self.sleeps.append(seconds)
            self._wake_at = self._now + seconds
            self._cond.notify_all()
            while not self._released and self._now < self._wake_at - 1e-9:
                self._cond.wait()
            self._wake_at = None
            self._cond.notify_all()

    def set(self, now: float) -> None:
        with self._cond:
            self._now = now
            self._cond.notify_all()

    def advance(self, seconds: float) -> None:
        with self._cond:
            self._now += seconds
            self._cond.notify_all()

    def wait_until_asleep(self, timeout: float = 5.0) -> None:
        """Block until the supervisor thread sleeps for a time still ahead: the due steps are done."""
        with self._cond:
            asleep = self._cond.wait_for(
                lambda: self._wake_at is not None and self._now < self._wake_at - 1e-9, timeout)
        assert asleep, "supervisor thread did not go back to sleep"

    def release(self) -> None:
        """Let every sleep return at once (the supervisor is being stopped)."""
        with self._cond:
            self._released = True
            self._cond.notify_all()
