"""Frames pushed to the daemon over ZeroMQ: a robot without ROS sends its camera images (docs/zmq.md).

Patterns: `sub` (connect to the robot's PUB), `pull` (bind, or connect to the robot's PUSH), `rep` (answer
imagezmq's REQ senders). Messages are edgeinfer's wire format v1 or v2 (`wire.py`, told apart per message) or,
with `protocol: imagezmq`, what imagezmq's `send_image` / `send_jpg` send, unchanged.

Latest frame: a raw frame (bgr8, mono8; rgb8 costs a colour conversion) is a view over the received buffer, so
every one is handed over in arrival order and the model's one-frame slot keeps the newest (a frame that was
already queued behind a newer one is overwritten there at once, counted as a drop). A compressed one is worth
skipping before its decode: ZMQ_CONFLATE does not work with multipart messages, so the read drains everything
queued and keeps only the newest good message; the older ones are counted as `superseded` and only that one is
decoded (a JPEG is decoded once, not once per queued message). A quiet sender is not a broken stream: the read
just keeps waiting and the watchdog's `min_fps` says when it is too quiet.
Malformed messages are dropped, counted per reason, and logged at a bounded rate; they are not watchdog
faults, so a stray peer cannot move the robot's safety state (only the lack of good frames can).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Literal

from ...frame import Captured
from ...health import HealthReporter
from ...lazy import lazy_import
from ...mailbox import FrameSink
from ...sources.base import Source, SourceError
from . import wire
from .memory import keep_large_buffers_in_heap
from .schema import ZmqSourceConfig
from .security import INSTALL_HINT, CurveServer, curve_problems

log = logging.getLogger(__name__)

POLL_MS = 100  # how often a waiting read looks at the stop flag: bounds stop() latency
MAX_DRAIN = 256  # messages looked at per read before delivering: a flood cannot starve the pipeline
HEADER_ALLOWANCE = 64 * 1024  # MAXMSGSIZE is max_bytes plus this, so ZeroMQ never buffers a giant message
CHEAP = frozenset(("bgr8", "mono8"))  # handed over as a view of the received buffer: never worth skipping




class ZmqSource(Source):
    preflight_problems_are_permanent = True  # a missing key file or pyzmq does not appear by retrying

    def __init__(self, config: ZmqSourceConfig, sink: FrameSink, reporter: HealthReporter | None = None):
        super().__init__(config, sink, reporter)
        self.config: ZmqSourceConfig = config
        self._zmq: Any = None
        self._context: Any = None
        self._sock: Any = None
        self._curve: CurveServer | None = None
        self._parse = wire.parse_imagezmq if config.protocol == "imagezmq" else wire.parse_message
        self._reply = config.pattern == "rep"  # imagezmq's REQ sender waits for an answer to every message
        self._counts_lock = threading.Lock()
        self.malformed: dict[str, int] = dict.fromkeys(wire.REASONS, 0)
        self.received = 0
        self.superseded = 0
        self.seq_went_back = 0  # the sender's seq fell below the last one delivered (a restart, two senders)
        self._last_seq: int | None = None  # the last frame number delivered (sender's seq + offset)
        self._seq_offset = 0
        self._denied_before = 0  # unauthenticated peers counted by ZAP handlers of earlier opens
        self.bound_endpoint: str | None = None  # the address actually bound (a `:*` port resolved)
        self.endpoint_ready = threading.Event()


    def describe(self) -> str:
        verb = "bound" if self.config.binds else "connected"
        where = self.bound_endpoint or self.config.endpoint
        return f"zmq {self.config.pattern} {verb} {where} ({self.config.protocol})"

    def preflight(self) -> list[str]:
        problems = []
        try:
            lazy_import("zmq", INSTALL_HINT)
        except ImportError as exc:
            problems.append(f"type: {exc}")
        return problems + curve_problems(self.config.curve)

    def counters(self) -> dict[str, Any]:
        with self._counts_lock:
            counts = {"received": self.received, "superseded": self.superseded,
                      "seq_went_back": self.seq_went_back,
                      "malformed": {k: v for k, v in self.malformed.items() if v}}
        curve = self._curve
        counts["unauthenticated"] = (self._denied_before + (curve.denied if curve is not None else 0)
                                     if self.config.curve is not None else None)
        return counts

    def stats(self) -> dict[str, Any]:
        return super().stats() | self.counters()

    # ---- the plugin methods (run on the capture thread) -----------------------------------------------------

    def _open(self) -> None:
        zmq = self._zmq = lazy_import("zmq", INSTALL_HINT)
        cfg = self.config
        if cfg.reuse_buffers:
            keep_large_buffers_in_heap()
        self._context = zmq.Context(io_threads=1)
        try:
            if cfg.curve is not None:
                self._curve = CurveServer(self._context, cfg.curve, f"source '{self.id}'")
            kind = {"sub": zmq.SUB, "pull": zmq.PULL, "rep": zmq.REP}[cfg.pattern]
            sock = self._context.socket(kind)
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, cfg.rcvhwm)
            sock.setsockopt(zmq.RCVTIMEO, POLL_MS)
            # ZeroMQ drops the connection of a peer whose message is far over the limit, so a rogue sender
            # cannot make us buffer gigabytes; between max_bytes and this we receive, count and drop.
            sock.setsockopt(zmq.MAXMSGSIZE, cfg.max_bytes + HEADER_ALLOWANCE)
            if self._curve is not None:
                self._curve.secure(sock)
            if cfg.pattern == "sub":
                sock.setsockopt(zmq.SUBSCRIBE, b"")
            self._sock = sock
            if cfg.binds:
                sock.bind(cfg.endpoint)
            else:
                sock.connect(cfg.endpoint)
            if self._curve is not None:
                self._curve.watch()
            value = sock.getsockopt(zmq.LAST_ENDPOINT)
            self.bound_endpoint = value.decode() if isinstance(value, bytes) else str(value)
        except zmq.ZMQError as exc:
            self._close()
            verb = "bind" if cfg.binds else "connect"
            raise SourceError(f"cannot {verb} {cfg.pattern.upper()} socket to {cfg.endpoint}: {exc}") from exc
        except BaseException:
            self._close()
            raise
        self.endpoint_ready.set()
        log.info("source '%s': receiving on %s", self.id, self.describe())

    def _read(self) -> Captured | None:
        zmq = self._zmq
        sock = self._sock
        reply = self._reply
        while not self._stop.is_set():
            # One blocking receive (RCVTIMEO bounds it, so stop() is seen) instead of poll + receive.
            newest = self._receive_one(sock, zmq, 0, reply)
            if newest is False:
                continue  # a quiet sender: keep waiting, the watchdog's min_fps judges it
            # A raw frame is handed over at once (what is queued behind it follows on the next reads; the model's
            # slot keeps the newest). A compressed one, or a malformed message: first take what is already queued.
            if newest is None or newest.encoding not in CHEAP:
                newest = self._newest_queued(sock, zmq, newest, reply)
            if newest is not None:
                captured = self._captured(newest)
                if captured is not None:
                    return captured
        return None

    def _newest_queued(self, sock: Any, zmq: Any, newest: wire.Parsed | None, reply: bool) -> wire.Parsed | None:
        """Take what is already queued without waiting, up to a raw frame, and keep the newest good message (only
        that one gets decoded); EVENTS says whether more is there without the cost of a zmq.Again."""
        for _ in range(MAX_DRAIN - 1):
            if not sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                break
            parsed = self._receive_one(sock, zmq, zmq.NOBLOCK, reply)
            if parsed is False:
                break
            if parsed is not None:
                if newest is not None:
                    with self._counts_lock:
                        self.superseded += 1
                newest = parsed
                if parsed.encoding in CHEAP:
                    break
        return newest

    def _captured(self, parsed: wire.Parsed) -> Captured | None:
        """The frame of a parsed message, or None when its pixels do not decode (counted as malformed)."""
        image = parsed.image  # a raw frame the parse has already viewed
        if image is None:
            try:
                image = wire.decode_image(parsed, self.config.max_pixels)
            except wire.Malformed as exc:
                self._count_malformed(exc)
                return None
        seq = parsed.seq
        if seq is not None:
            seq += self._seq_offset
            if self._last_seq is not None and seq <= self._last_seq:
                seq = self._seq_went_back(parsed.seq)
            self._last_seq = seq
        return Captured(image, wall=parsed.stamp, seq=seq, frame_id=parsed.frame_id)

    def _receive_one(self, sock: Any, zmq: Any, flags: int, reply: bool) -> wire.Parsed | None | Literal[False]:
        """One whole message, parsed: the Parsed message, None when it was malformed (counted), False when
        nothing came (RCVTIMEO ran out, or nothing queued with NOBLOCK)."""
        try:
            first = sock.recv(flags, copy=False)
        except zmq.Again:
            return False
        # The header is small: parsed from a bytes copy. The payload is never copied: the image handed to the
        # pipeline is a read-only view over ZeroMQ's own buffer. A zmq.Frame knows whether more parts follow (the
        # rest of a multipart message is there at once: atomic delivery), so there is no getsockopt per part.
        parts = [first.bytes]
        part = first
        while part.more:
            part = sock.recv(zmq.NOBLOCK, copy=False)
            parts.append(part)
        if reply:
            sock.send(b"OK")  # imagezmq's REQ sender waits for this; answer before any work
        try:
            parsed = self._parse(parts, self.config.max_bytes)
        except wire.Malformed as exc:
            self._count_malformed(exc)
            return None
        self.received += 1  # written by this thread only: no lock
        return parsed

    def _seq_went_back(self, seq: int) -> int:
        """The frame number for a sender's seq that is not above the last one delivered: the watchdog's flow
        check takes a frame number that goes back for a fault (SAFE_STOP by default), but a robot whose sender
        restarts from 0 is not a perception fault. So the sender's seq is shifted past the last number delivered
        (logged and counted) and stays shifted; the stamp still matches the sender's exactly."""
        number = self._last_seq + 1
        self._seq_offset = number - seq
        with self._counts_lock:
            self.seq_went_back += 1
        self._log.log(logging.WARNING, "seq_back",
                      f"source '{self.id}': the sender's seq went back to {seq} (a restarted sender, or "
                      f"several senders on one source); its frames are numbered seq + {self._seq_offset} "
                      f"from here on so that frame numbers keep growing")
        return number

    def _count_malformed(self, exc: wire.Malformed) -> None:
        with self._counts_lock:
            self.malformed[exc.reason] += 1
            count = self.malformed[exc.reason]
        self._log.log(logging.WARNING, f"malformed:{exc.reason}",
                      f"source '{self.id}': dropped a malformed message ({exc.reason}: {exc}); "
                      f"{count} {exc.reason} so far")

    def _close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close(linger=0)
        curve, self._curve = self._curve, None
        if curve is not None:
            curve.stop()
            self._denied_before += curve.denied
        context, self._context = self._context, None
        if context is not None:
            context.term()
