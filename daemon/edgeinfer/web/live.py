"""The live annotated view of each (model, source): the newest result drawn and JPEG-encoded on one encoder
thread, only while someone watches.

The publish thread only stores a reference to the newest result (latest-result semantics); the encoder thread
draws and encodes it at most `fps` times a second per view, and only for views with a connected viewer, so a
page nobody looks at costs nothing and a page somebody looks at never slows inference. Every viewer of a view
gets the same encoded JPEG (encoded once, whatever the number of viewers).

Counted per view: `encoded`; `skipped`, results replaced while the view waited for its next turn under the
`fps` cap (by design); `dropped`, results replaced while the encoder was busy (it fell behind).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..draw import annotate
from ..handoff import lower_thread_priority
from ..logutil import RateLimitedLog

log = logging.getLogger(__name__)

ViewKey = tuple[str, str]  # (model, source)


@dataclass
class LiveView:
    model: str
    source: str
    latest: Any = None  # the newest Result, not yet encoded
    pending: bool = False
    jpeg: bytes | None = None
    version: int = 0  # counts encodes: a viewer sends a part when it changes
    viewers: int = 0
    next_due: float = 0.0  # monotonic: the fps cap's next slot
    offered: int = 0
    encoded: int = 0
    skipped: int = 0
    dropped: int = 0
    last_seq: int | None = None
    encode_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "source": self.source, "viewers": self.viewers, "encoded": self.encoded,
                "skipped": self.skipped, "dropped": self.dropped, "offered": self.offered,
                "last_seq": self.last_seq, "encode_ms": round(self.encode_ms, 2)}


class LiveViews:
    def __init__(self, fps: float, jpeg_quality: int, max_width: int,
                 on_encoded: Callable[[ViewKey], None] | None = None):
        self.period = 1.0 / fps
        self.jpeg_quality = jpeg_quality
        self.max_width = max_width
        self.on_encoded = on_encoded or (lambda key: None)
        self._views: dict[ViewKey, LiveView] = {}
        self._cond = threading.Condition()
        self._stop = False
        self._busy = False
        self._thread: threading.Thread | None = None
        self._rlog = RateLimitedLog(log)
        self.errors = 0
        self.cpu_s = 0.0  # CPU time of the encoder thread: what watching costs, in absolute terms

    # -- the publish thread's side: a reference swap under a short lock ------------------------------------
    def offer(self, result: Any) -> None:
        if getattr(result, "frame", None) is None:
            return
        key = (result.model, result.source)
        with self._cond:
            view = self._views.get(key)
            if view is None:
                view = self._views[key] = LiveView(result.model, result.source)
            view.offered += 1
            if view.pending and view.viewers:
                if self._busy:
                    view.dropped += 1
                else:
                    view.skipped += 1
            view.latest, view.pending = result, True
            if view.viewers:
                self._cond.notify()

    def declare(self, model: str, source: str) -> None:
        """A view known before its first result (from the config), so the page lists it at once."""
        with self._cond:
            self._views.setdefault((model, source), LiveView(model, source))

    # -- viewers -------------------------------------------------------------------------------------------
    def add_viewer(self, key: ViewKey) -> bool:
        with self._cond:
            view = self._views.get(key)
            if view is None:
                return False
            view.viewers += 1
            self._cond.notify()
            return True

    def remove_viewer(self, key: ViewKey) -> None:
        with self._cond:
            view = self._views.get(key)
            if view is not None and view.viewers > 0:
                view.viewers -= 1

    def frame(self, key: ViewKey) -> tuple[bytes | None, int]:
        with self._cond:
            view = self._views.get(key)
            return (None, -1) if view is None else (view.jpeg, view.version)

    def views(self) -> list[dict[str, Any]]:
        with self._cond:
            return [v.as_dict() for v in self._views.values()]

    def keys(self) -> list[ViewKey]:
        with self._cond:
            return list(self._views)

    def totals(self) -> dict[str, int]:
        with self._cond:
            views = list(self._views.values())
            return {"encoded": sum(v.encoded for v in views), "skipped": sum(v.skipped for v in views),
                    "dropped": sum(v.dropped for v in views), "viewers": sum(v.viewers for v in views),
                    "encode_cpu_s": round(self.cpu_s, 4)}

    def snapshot(self, key: ViewKey) -> bytes | None:
        """The newest result of a view as one JPEG, encoded now if no viewer keeps one fresh (caller's thread)."""
        with self._cond:
            view = self._views.get(key)
            if view is None:
                return None
            if view.viewers and view.jpeg is not None:
                return view.jpeg
            result = view.latest
        if result is None:
            return self.frame(key)[0]
        return self._encode(result)

    # -- the encoder thread ----------------------------------------------------------------------------------
    def start(self) -> None:
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="edgeinfer-http-encode", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(2.0)

    def _next(self) -> tuple[LiveView, Any] | None:
        """Under the lock: the view due for an encode (watched, a new result, past its fps slot), or None after
        waiting for one to become due."""
        now = time.monotonic()
        wait: float | None = None
        for view in self._views.values():
            if not (view.pending and view.viewers):
                continue
            if now >= view.next_due:
                result, view.latest, view.pending = view.latest, None, False
                view.next_due = max(view.next_due + self.period, now)  # keeps the rate, without bursts
                return view, result
            wait = view.next_due - now if wait is None else min(wait, view.next_due - now)
        self._cond.wait(wait if wait is not None else 1.0)
        return None

    def _run(self) -> None:
        lower_thread_priority()  # a saturated box draws fewer live frames rather than infers fewer
        while True:
            with self._cond:
                if self._stop:
                    return
                due = self._next()
                if due is None:
                    continue
                self._busy = True
            view, result = due
            t0, cpu0 = time.perf_counter(), time.thread_time()
            try:
                jpeg = self._encode(result)
            except Exception as exc:  # a result that cannot be drawn must not end the live view
                self.errors += 1
                self._rlog.error("encode", "http live view %s/%s: cannot draw frame: %s", view.model,
                                 view.source, exc)
                jpeg = None
            with self._cond:
                self._busy = False
                self.cpu_s += time.thread_time() - cpu0
                if jpeg is not None:
                    view.jpeg, view.version = jpeg, view.version + 1
                    view.encoded += 1
                    view.last_seq = result.seq
                    view.encode_ms = (time.perf_counter() - t0) * 1e3
            if jpeg is not None:
                self.on_encoded((view.model, view.source))

    def _encode(self, result: Any) -> bytes | None:
        import cv2

        image = annotate(result)
        if image is None:
            return None
        height, width = image.shape[:2]
        if width > self.max_width:
            image = cv2.resize(image, (self.max_width, max(1, round(height * self.max_width / width))),
                               interpolation=cv2.INTER_AREA)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        return data.tobytes() if ok else None
