"""What every capture source shares: config base, capture thread, stamping, pacing, reconnects, stats.

A plugin implements three small methods (`_open`, `_read`, `_close`) and says whether it is finite; the base
class runs the capture thread around them:

- finite sources (a file, a folder, a synthetic run with `frames` set) number frames in file order, deliver
  with `wait=True` so every frame is processed (unless paced in real time), and call `sink.end` at the end
  or start over when `loop` is set;
- live sources (camera, stream, pipeline) deliver the newest frame (`wait=False`; the mailbox counts
  overwritten frames) and, when the device or server goes away, close, log at a bounded rate and reopen
  with exponential backoff until stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from ..frame import Captured, DeviceImage, Frame
from ..health import HealthReporter, NullReporter
from ..logutil import RateLimitedLog
from ..mailbox import FanOut, FrameSink
from .schema import SourceConfigBase

if TYPE_CHECKING:
    from ..runtime import RuntimeContext

log = logging.getLogger(__name__)

STATES = ("starting", "running", "reconnecting", "ended", "failed", "stopped")

# A live source that yields only unusable frames this many times in a row is treated as broken and reopened.
MAX_CONSECUTIVE_BAD_FRAMES = 30
# A frame that arrives with its own capture stamp at most this long ago (by our clock) is aged from that
# stamp; beyond it (or in the future) the two clocks are taken to disagree and the frame is aged from arrival.
MAX_TRUSTED_TRANSIT_S = 5.0
# Window for the fps figure in stats().
FPS_WINDOW_S = 5.0
# A paced source later than this behind its schedule (consumer blocked, machine stalled) restarts the
# schedule from now instead of delivering the backlog in a burst.
MAX_PACING_LAG_S = 1.0






class SourceError(RuntimeError):
    """A source cannot work as configured (file missing, not decodable, no backend). Names the source."""


class BadFrame(Exception):
    """Raised by a plugin's `_read` for one unusable frame when the stream itself goes on (e.g. a corrupt
    image in a folder). The base class counts it and reads the next one."""


class _Pacer:
    """Sleeps until the next slot of a fixed-rate schedule on the monotonic clock.

    Slots are computed from one anchor (anchor + k / fps), so rounding and sleep overshoot do not add up.
    """

    def __init__(self, fps: float, stop: threading.Event):
        self._period = 1.0 / fps
        self._stop = stop
        self._next: float | None = None

    def wait(self) -> bool:
        """False when stop was requested while waiting."""
        now = time.monotonic()
        if self._next is None or now - self._next > MAX_PACING_LAG_S:
            self._next = now
        delay = self._next - now
        if delay > 0 and self._stop.wait(delay):
            return False
        self._next += self._period
        return not self._stop.is_set()


_UINT8 = np.dtype(np.uint8)  # numpy's built-in dtypes are singletons: an identity test is the cheap check


def as_bgr(image: Any) -> tuple[np.ndarray | None, str]:
    """The image as H x W x 3 uint8 BGR, or (None, why it is unusable). Gray and BGRA are converted."""
    # the usual case first, in few steps: this runs on every frame, just after the capture thread woke up
    if type(image) is np.ndarray and image.dtype is _UINT8 and image.ndim == 3 and image.shape[2] == 3 and image.size:
        return image, ""
    if image is None:
        return None, "no image"
    if not isinstance(image, np.ndarray):
        return None, f"not an array ({type(image).__name__})"
    if image.size == 0:
        return None, f"empty image (shape {image.shape})"
    if image.dtype != np.uint8:
        return None, f"unsupported pixel type {image.dtype} (need uint8)"
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), ""
    if image.ndim == 3 and image.shape[2] == 3:
        return image, ""
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR), ""
    return None, f"unsupported image shape {image.shape}"


@dataclass(frozen=True)
class ResumePoint:
    type: str  # the source type
    what: str  # describe() of the source: the same input when equal
    seq: int  # the next frame number
    position: int  # frames of the input already read (the plugin's own count)


class Source(ABC):
    """One capture thread feeding one sink. See the module docstring for the behaviour it adds."""

    #: True for sources that are expected to fail on every retry once preflight finds a problem (no backend).
    preflight_problems_are_permanent = False
    #: set by the pipeline before start: False when a model reading this source preprocesses on the CPU, where
    #: frames decoded into GPU memory would only be downloaded again (a `decode: auto` source decodes on the CPU)
    prefer_device_frames: bool = True

    def __init__(self, config: SourceConfigBase, sink: FrameSink, reporter: HealthReporter | None = None):
        self.config = config
        self._sink = sink
        self._reporter: HealthReporter = reporter if reporter is not None else NullReporter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._log = RateLimitedLog(log, interval_s=10.0)
        self._seq = 0
        self._unsent = 0
        self._frames = 0
        self._bad_frames = 0
        self._reconnects = 0
        self._streams = 0  # openings that delivered frames (Frame.stream)
        self._failed_opens = 0
        self._state = "starting"
        self._last_error: str | None = None
        self._recent_stamps: deque[float] = deque(maxlen=1024)

    # ---- what a plugin provides -------------------------------------------------------------------------

    @property
    def finite(self) -> bool:
        """True when the frames run out (file, folder, synthetic run with a frame count): the config says."""
        return self.config.finite

    @property
    def loop(self) -> bool:
        """A finite source that starts over at its end instead of ending."""
        return False

    @property
    def pace_fps(self) -> float | None:
        """Deliver at most this many frames per second (real-time files, synthetic); None = as read."""
        return None

    @property
    def wait_for_consumer(self) -> bool:
        """Deliver with wait=True (every frame processed) instead of overwriting the unread frame."""
        return self.finite and self.pace_fps is None

    def describe(self) -> str:
        """Where the frames come from, for messages (no secrets)."""
        return self.type

    def preflight(self) -> list[str]:
        """Problems visible without starting. Each starts with the config field it is about and ': ',
        so a caller can prefix the key path of the source (e.g. "sources[0].path: no such file ...")."""
        return []

    @abstractmethod
    def _open(self) -> None:
        """Open the device/file/stream; raise (SourceError or anything) when it cannot be opened."""

    @abstractmethod
    def _read(self) -> np.ndarray | Captured | DeviceImage | None:
        """The next image (or a `Captured` carrying the stamp, sequence number and frame id it arrived with, or
        a `DeviceImage` decoded into GPU memory); None at the end of the stream (or when a live stream broke)."""

    @abstractmethod
    def _close(self) -> None:
        """Release what `_open` acquired; must not raise and must be safe to call twice."""

    # ---- public API ---------------------------------------------------------------------------------------

    @property
    def id(self) -> str:
        return self.config.id

    @property
    def frame_id(self) -> str:
        return self.config.frame_id or self.config.id

    @property
    def type(self) -> str:
        """The config's type key (the class name for a source built on the bare base config)."""
        return getattr(self.config, "type", type(self).__name__)

    @property
    def state(self) -> str:
        return self._state

    @classmethod
    def preflight_config(cls, config: SourceConfigBase) -> list[str]:
        """`preflight` for a config alone (`edgeinfer check`): builds the source unstarted, without a sink."""
        return cls(config, FanOut([])).preflight()  # a sink with no targets: discards

    def attach(self, ctx: RuntimeContext) -> None:
        """Take what the source shares from the pipeline's runtime context (a ROS source: the node). Called by
        `start` before anything opens; the default takes nothing."""

    def start(self, ctx: RuntimeContext | None = None) -> None:
        """Start the capture thread. A finite source is opened here, so that a file that cannot be read
        fails now with a SourceError; a live source opens (and retries) in its thread."""
        if self._thread is not None:
            raise RuntimeError(f"source '{self.id}' was already started")
        if ctx is not None:
            self.attach(ctx)
        problems = self.preflight()
        if problems and (self.finite or self.preflight_problems_are_permanent):
            self._set_state("failed", "; ".join(problems))
            raise SourceError(f"source '{self.id}' ({self.describe()}): " + "; ".join(problems))
        for problem in problems:
            log.warning("source '%s' (%s): %s; will keep trying", self.id, self.describe(), problem)
        if self.finite:
            try:
                self._open()
            except Exception as exc:
                self._close_quietly()
                self._set_state("failed", str(exc))
                raise SourceError(f"source '{self.id}' ({self.describe()}): cannot open: {exc}") from exc
        self._thread = threading.Thread(target=self._run, name=f"source:{self.id}", daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the thread to finish without waiting (stop many sources at once, then `stop` each)."""
        self._stop.set()

    def stop(self, timeout: float = 2.0) -> bool:
        """Ask the thread to finish and wait at most `timeout` s. Returns True when it finished.

        A thread still blocked inside OpenCV (a read waits at most the read timeout) finishes on its own and
        closes the capture then; releasing a capture from here while it reads would crash. A thread blocked
        in `sink.put(wait=True)` finishes when the sink is closed.
        """
        self._stop.set()
        thread = self._thread
        finished = True
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            finished = not thread.is_alive()
            if not finished:
                log.warning("source '%s': capture thread still busy after %.1f s; it will exit when the "
                            "pending read returns", self.id, timeout)
        elif thread is None:
            self._close_quietly()
        if self._state not in ("ended", "failed"):
            self._set_state("stopped")
        return finished

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the capture thread to end on its own (finite sources). True when it has."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def stats(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._recent_stamps if now - t <= FPS_WINDOW_S]
            return {
                "id": self.id,
                "type": self.type,
                "state": self._state,
                "frames": self._frames,
                "bad_frames": self._bad_frames,
                "reconnects": self._reconnects,
                "failed_opens": self._failed_opens,
                "last_seq": self._seq - 1 if self._seq else None,
                "last_error": self._last_error,
                # Up to now, not to the last frame: a stalled stream's rate falls towards 0.
                "fps": (len(recent) - 1) / (now - recent[0]) if len(recent) >= 2 else 0.0,
            }

    def counters(self) -> dict[str, Any]:
        """Plugin counters for the heartbeat (e.g. malformed messages per reason); {} when it has none."""
        return {}

    def __enter__(self) -> Source:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- the capture thread -----------------------------------------------------------------------------

    # ---- reloads (reload.py): a finite source of the next pipeline goes on where this one was ------------

    def resume_point(self) -> ResumePoint | None:
        """Where this source is (called once its thread has stopped); None for live sources."""
        if not self.finite:
            return None
        unsent = self._unsent
        return ResumePoint(self.type, self.describe(), self._seq - unsent, max(0, self._input_position() - unsent))

    def resume(self, point: ResumePoint) -> None:
        """Continue from `point`, the previous pipeline's source of the same id: numbering always continues
        (frame numbers never collide in the output); the input itself resumes only when it is the same one
        (`_resume_input`), else it starts from its beginning and a log line says so."""
        if point.type != self.type:
            return
        self._seq = point.seq
        if point.what == self.describe():
            self._resume_input(point.position)
        else:
            log.info("source '%s': now %s (was %s): read from its start; frame numbers go on from %d",
                     self.id, self.describe(), point.what, point.seq)

    def _input_position(self) -> int:
        """How far into its input a finite source is, in frames (the plugin's unit); 0 when it cannot say."""
        return 0

    def _resume_input(self, position: int) -> None:
        """Skip the first `position` frames of the input at the next open; default: start from the beginning."""
        if position:
            log.info("source '%s': reloaded: %s is read from its start again; frame numbers go on from %d",
                     self.id, self.describe(), self._seq)

    def _run(self) -> None:
        try:
            if self.finite:
                self._run_finite()
            else:
                self._run_live()
        except Exception as exc:  # a bug, not a device problem: say so loudly, never die silently
            log.exception("source '%s': capture thread crashed", self.id)
            self._set_state("failed", f"capture thread crashed: {exc!r}")
            self._reporter.fault(self.id, f"capture thread crashed: {exc!r}")
            self._sink.end(self.id)
        finally:
            self._close_quietly()

    def _run_finite(self) -> None:
        pacer = _Pacer(self.pace_fps, self._stop) if self.pace_fps else None
        while True:
            frames_before = self._frames
            outcome, error = self._pump(pacer)
            if outcome == "stopped":
                self._set_state("stopped")
                return
            if outcome == "error":
                self._fail(f"read failed: {error}")
                return
            # End of the file/folder/run.
            if self.loop and self._stop.is_set():  # a stop that arrived at the end of a pass is a stop
                self._set_state("stopped")
                return
            if self.loop and not self._stop.is_set():
                if self._frames == frames_before:
                    self._fail("loop: a whole pass gave no usable frame")
                    return
                self._close_quietly()
                try:
                    self._open()
                except Exception as exc:
                    self._fail(f"cannot reopen to loop: {exc}")
                    return
                continue
            self._close_quietly()
            self._set_state("ended")
            log.info("source '%s' (%s): ended after %d frames%s", self.id, self.describe(), self._frames,
                     f" ({self._bad_frames} bad frame(s) skipped)" if self._bad_frames else "")
            self._sink.end(self.id)
            return

    def _run_live(self) -> None:
        backoff = self.config.reconnect.initial_s
        lost = False  # the stream was open before, or an open failed: the next success is a reconnect
        pacer = _Pacer(self.pace_fps, self._stop) if self.pace_fps else None
        while not self._stop.is_set():
            try:
                self._open()
            except Exception as exc:
                self._close_quietly()
                with self._lock:
                    self._failed_opens += 1
                self._live_problem("open", f"cannot open: {exc}", backoff)
                if self._stop.wait(backoff):
                    break
                backoff = min(backoff * self.config.reconnect.factor, self.config.reconnect.max_s)
                lost = True
                continue
            if lost:
                with self._lock:
                    self._reconnects += 1
                log.info("source '%s' (%s): reopened (reconnect #%d)", self.id, self.describe(),
                         self._reconnects)
            frames_before = self._frames
            outcome, error = self._pump(pacer)
            self._close_quietly()
            if outcome == "stopped":
                break
            if self._frames > frames_before:
                backoff = self.config.reconnect.initial_s  # it worked for a while: retry quickly
            reason = f"read failed: {error}" if outcome == "error" else "stream ended"
            self._live_problem("read", reason, backoff)
            lost = True
            if self._stop.wait(backoff):
                break
            backoff = min(backoff * self.config.reconnect.factor, self.config.reconnect.max_s)
        self._set_state("stopped")

    def _pump(self, pacer: _Pacer | None) -> tuple[str, str]:
        """Read and deliver until the stream ends. Returns (outcome, error) with outcome one of
        "end", "error", "stopped" (stop requested or sink closed)."""
        wait = self.wait_for_consumer
        consecutive_bad = 0
        self._streams += 1  # one call per opening (a reconnect, a new pass over a file)
        while not self._stop.is_set():
            if pacer is not None and not pacer.wait():
                break
            try:
                image = self._read()
            except BadFrame as exc:
                self._count_bad_frame(str(exc))
                continue
            except Exception as exc:
                return "error", f"{type(exc).__name__}: {exc}"
            mono = time.monotonic()
            wall = time.time()
            if image is None:
                # a live read that gave up because stop was asked is a stop, not a broken stream
                return ("stopped" if self._stop.is_set() else "end"), ""
            seq, frame_id = self._seq, None
            if isinstance(image, Captured):  # keep the header the frame arrived with
                captured, image = image, image.image
                if captured.wall is not None:
                    # ages count from capture: shift the monotonic stamp by the transit time, unless the
                    # sender's clock plainly disagrees with ours (then the age counts from arrival)
                    transit = wall - captured.wall
                    wall = captured.wall
                    if 0.0 <= transit <= MAX_TRUSTED_TRANSIT_S:
                        mono -= transit
                if captured.seq is not None:
                    seq = captured.seq
                frame_id = captured.frame_id
            device = None
            if isinstance(image, DeviceImage):  # decoded into GPU memory: stays there
                device, image = image, None
            else:
                image, problem = as_bgr(image)
                if image is None:
                    self._count_bad_frame(problem)
                    consecutive_bad += 1
                    if not self.finite and consecutive_bad >= MAX_CONSECUTIVE_BAD_FRAMES:
                        return "error", f"{consecutive_bad} unusable frames in a row (last: {problem})"
                    continue
            consecutive_bad = 0
            # built once with its final fields: this runs for every frame, just after the capture thread woke
            frame = Frame(self.id, seq, image, mono, wall, frame_id or self.frame_id, stream=self._streams,
                          device=device)
            self._seq += 1
            if not self._sink.put(frame, wait):
                self._unsent = 1  # read but never delivered: a reload reads it again
                log.info("source '%s': sink closed, stopping", self.id)
                break
            with self._lock:
                self._frames += 1
                self._recent_stamps.append(mono)
                if self._state != "running":
                    self._state = "running"
            self._reporter.alive(self.id)
        return "stopped", ""

    def _count_bad_frame(self, problem: str) -> None:
        # A bad frame keeps its number, so seq stays the index in file order.
        seq = self._seq
        self._seq += 1
        with self._lock:
            self._bad_frames += 1
            self._last_error = f"bad frame {seq}: {problem}"
        self._reporter.fault(self.id, f"bad frame {seq}: {problem}")
        self._log.log(logging.WARNING, "bad_frame",
                  f"source '{self.id}' ({self.describe()}): dropped bad frame {seq}: {problem}")

    def _live_problem(self, kind: str, message: str, retry_in_s: float) -> None:
        self._set_state("reconnecting", message)
        self._reporter.fault(self.id, message)
        self._log.log(logging.WARNING, kind,
                  f"source '{self.id}' ({self.describe()}): {message}; retrying in {retry_in_s:.1f} s")

    def _fail(self, message: str) -> None:
        self._close_quietly()
        self._set_state("failed", message)
        self._reporter.fault(self.id, message)
        log.error("source '%s' (%s): %s", self.id, self.describe(), message)
        self._sink.end(self.id)

    def _set_state(self, state: str, error: str | None = None) -> None:
        with self._lock:
            self._state = state
            if error is not None:
                self._last_error = error

    def _close_quietly(self) -> None:
        try:
            self._close()
        except Exception:  # closing must never hide the error that led here
            log.exception("source '%s': error while closing", self.id)
