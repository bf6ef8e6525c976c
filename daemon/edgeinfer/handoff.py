"""A hand-off from the pipeline's publish thread to an output's own worker thread that never blocks the
publisher: a bounded queue that drops its oldest item when full (depth 1: latest-result semantics).

Drawing and encoding cost milliseconds; the publish thread must not pay them, or inference would slow down.
When the worker falls behind, old results are dropped and counted, never queued without bound.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from .logutil import RateLimitedLog

log = logging.getLogger(__name__)


BACKGROUND_NICE = 10  # CFS weight 110 against the pipeline's 1024: a busy box runs inference first


def lower_thread_priority(nice: int = BACKGROUND_NICE) -> None:
    """Lower the calling thread's CPU priority (Linux: setpriority on the thread id sets that thread's nice).
    For threads that only serve people looking (the live view): when the CPU is saturated, inference wins and
    the view gets fewer frames, instead of the other way round. Best effort elsewhere."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
    except (AttributeError, OSError):  # not Linux, or not allowed: run at normal priority
        pass


class DropOldestWorker:
    def __init__(self, name: str, handle: Callable[[Any], None], depth: int = 1):
        self.name = name
        self._handle = handle
        self._items: deque[Any] = deque()
        self._depth = depth
        self._cond = threading.Condition()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._rlog = RateLimitedLog(log)
        self.offered = 0
        self.handled = 0
        self.dropped = 0  # overwritten before the worker got to them
        self.errors = 0
        self.last_error: str | None = None

    def start(self) -> None:
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def offer(self, item: Any) -> None:
        """Never blocks (beyond a short lock): the oldest waiting item is dropped when the queue is full."""
        with self._cond:
            self.offered += 1
            if len(self._items) >= self._depth:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()

    def close(self, timeout: float = 5.0, drain: bool = True) -> bool:
        """Stop the thread; with `drain` the items already queued are handled first. True when it ended."""
        with self._cond:
            if not drain:
                self.dropped += len(self._items)
                self._items.clear()
            self._stop = True
            self._cond.notify()
        thread, self._thread = self._thread, None
        if thread is None:
            return True
        thread.join(timeout)
        return not thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items and not self._stop:
                    self._cond.wait()
                if not self._items:
                    return
                item = self._items.popleft()
            try:
                self._handle(item)
                self.handled += 1
            except Exception as exc:  # one bad item must not end the worker: count it, say it, go on
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._rlog.error(self.name, "%s: %s", self.name, self.last_error)

    def counters(self) -> dict[str, Any]:
        return {"handled": self.handled, "dropped": self.dropped, "errors": self.errors}
