"""A network stream (RTSP, or HTTP(S) such as MJPEG or HLS) read through OpenCV's FFmpeg backend, or demuxed
by PyAV and decoded by NVDEC into GPU memory (`decode: nvdec`, or `auto` where it works: see nvdec.py).

Two things learned the hard way (see FACTS.md): without a read timeout a frozen server blocks `read()` for
~30 s, and once the server went away the capture never recovers, so a failed read means: release, then
open a new capture (the base class does that with backoff).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import cv2
import numpy as np

from ..frame import DeviceImage
from ..health import HealthReporter
from ..lazy import MissingDependency
from ..mailbox import FrameSink
from . import nvdec
from .base import BadFrame, Source, SourceError
from .schema import RtspSourceConfig, redact_url

FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"






def _options_with_transport(base: str | None, transport: str) -> str:
    # FFmpeg option string: "key;value|key;value". Keep what the user set, replace rtsp_transport.
    pairs = [p for p in (base or "").split("|") if p and not p.startswith("rtsp_transport;")]
    return "|".join([*pairs, f"rtsp_transport;{transport}"])


class _CaptureOptionsGate:
    """OPENCV_FFMPEG_CAPTURE_OPTIONS is process-global and read while a capture opens. Opens that need the
    same value may overlap; an open that needs another value waits until those finish, so an RTSP/udp
    source never opens with a tcp source's options (or the other way round)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._user_options = os.environ.get(FFMPEG_OPTIONS_ENV)
        self._value: str | None = None
        self._opening = 0

    @contextmanager
    def options(self, transport: str) -> Iterator[None]:
        value = _options_with_transport(self._user_options, transport)
        with self._cond:
            while self._opening and self._value != value:
                self._cond.wait()
            if self._value != value:
                os.environ[FFMPEG_OPTIONS_ENV] = value
                self._value = value
            self._opening += 1
        try:
            yield
        finally:
            with self._cond:
                self._opening -= 1
                if not self._opening:
                    self._cond.notify_all()


_options_gate = _CaptureOptionsGate()


class RtspSource(nvdec.HardwareDecoding, Source):
    def __init__(self, config: RtspSourceConfig, sink: FrameSink, reporter: HealthReporter | None = None):
        super().__init__(config, sink, reporter)
        self.config: RtspSourceConfig = config
        self._cap: cv2.VideoCapture | None = None
        self._stalled_after_s = 0.98 * config.read_timeout_ms / 1000
        self._init_decoding()

    def describe(self) -> str:
        return redact_url(self.config.url)

    def preflight(self) -> list[str]:
        if not cv2.videoio_registry.hasBackend(cv2.CAP_FFMPEG):
            return ["url: this OpenCV has no FFmpeg backend, needed for network streams"]
        return []

    def _open(self) -> None:
        if self._tries_nvdec() and self._open_nvdec():
            return
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self.config.open_timeout_ms,
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, self.config.read_timeout_ms]
        if self._is_rtsp:
            with _options_gate.options(self.config.transport):
                cap = cv2.VideoCapture(self.config.url, cv2.CAP_FFMPEG, params)
        else:
            cap = cv2.VideoCapture(self.config.url, cv2.CAP_FFMPEG, params)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"no stream at {self.describe()} (server down, wrong path, or timed out after "
                              f"{self.config.open_timeout_ms} ms)")
        self._cap = cap

    @property
    def _is_rtsp(self) -> bool:
        return urlsplit(self.config.url).scheme.lower().startswith("rtsp")

    def _open_nvdec(self) -> bool:
        """Demux with PyAV and decode with NVDEC (decode: nvdec, or auto where it works); False: decode on the
        CPU. A stream that cannot be reached raises, as on the CPU path (the base class reconnects)."""
        available, why = nvdec.probe()
        if not available:
            return self._nvdec_unavailable(why)
        options = {"rtsp_transport": self.config.transport} if self._is_rtsp else {}
        try:
            packets = nvdec.AnnexBPackets(self.config.url, options, timeout_s=(
                self.config.open_timeout_ms / 1000, self.config.read_timeout_ms / 1000))
        except (MissingDependency, nvdec.NvdecUnavailable) as exc:
            return self._nvdec_unavailable(exc)
        except Exception as exc:  # PyAV's errors: refused, not found, timed out
            raise SourceError(f"no stream at {self.describe()} ({type(exc).__name__}: {exc})") from exc
        try:
            reader = nvdec.NvdecReader(self.describe(), self.config.gpu, matrix=self.config.color_matrix,
                                       packets=packets)
        except nvdec.NvdecUnavailable as exc:
            packets.close()
            return self._nvdec_unavailable(exc)
        self._nvdec_started(reader)
        self._nvdec = reader
        return True

    def _read(self) -> np.ndarray | DeviceImage | None:
        if self._nvdec is not None:
            try:
                return self._nvdec.read()  # None: the stream ended (reopen); StreamLost: it failed (reopen)
            except nvdec.StreamLost:
                raise
            except Exception as exc:  # a packet the decoder rejects
                raise BadFrame(f"NVDEC cannot decode it: {exc}") from exc
        if self._cap is None:
            return None
        started = time.monotonic()
        ok, image = self._cap.read()
        if not ok:
            return None  # server gone: reopen
        if time.monotonic() - started >= self._stalled_after_s:
            # The read timeout fired. OpenCV may still hand out a buffered frame for the next two reads or
            # so (3x read_timeout_ms before it says False): call the stream lost now.
            raise TimeoutError(f"no data for {self.config.read_timeout_ms} ms (server hung?)")
        return image

    def _close(self) -> None:
        reader, self._nvdec = self._nvdec, None
        if reader is not None:
            reader.close()
        if self._cap is not None:
            self._cap.release()
            self._cap = None
