"""A video file, read in order (every frame) or paced at the file's frame rate like a camera."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np

from ..frame import DeviceImage
from ..health import HealthReporter
from ..mailbox import FrameSink
from . import nvdec
from .base import BadFrame, Source, SourceError
from .schema import VideoSourceConfig

log = logging.getLogger(__name__)

# Used for pacing when the container does not state a usable frame rate.
FALLBACK_FPS = 25.0




def _file_problems(path: Path) -> list[str]:
    if not path.exists():
        return [f"path: no such file: {path}"]
    if not path.is_file():
        return [f"path: not a file: {path}"]
    if not os.access(path, os.R_OK):
        return [f"path: no permission to read {path}"]
    if path.stat().st_size == 0:
        return [f"path: file is empty: {path}"]
    return []


def _open_capture(path: Path) -> tuple[cv2.VideoCapture, np.ndarray]:
    """An open capture and its first frame: a file that opens but decodes nothing fails here, at start."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        cap.release()
        raise SourceError(f"OpenCV cannot open {path} as a video (unknown container or codec?)")
    ok, first = cap.read()
    if not ok or first is None:
        cap.release()
        raise SourceError(f"{path} opens as a video but no frame could be decoded")
    return cap, first


class VideoSource(nvdec.HardwareDecoding, Source):
    def __init__(self, config: VideoSourceConfig, sink: FrameSink, reporter: HealthReporter | None = None):
        super().__init__(config, sink, reporter)
        self.config: VideoSourceConfig = config
        self._cap: cv2.VideoCapture | None = None
        self._first: np.ndarray | None = None
        self._file_fps: float | None = None
        self._frame_count = 0  # what the container states (0: unknown)
        self._position = 0  # frames read or failed since the file was opened
        self._bad_run = 0
        self._init_decoding()
        self._nvdec_ended = False  # the reader reached the end of the file (a loop may rewind it)
        self._spare_nvdec = None  # a reader kept from the last pass, for the next one (loop)
        self._first_device = None
        self._skip = 0  # frames to skip at the next open: a reload resumes where the previous source was

    @property
    def loop(self) -> bool:
        return self.config.loop

    @property
    def pace_fps(self) -> float | None:
        return self._file_fps if self.config.realtime else None

    @property
    def wait_for_consumer(self) -> bool:
        # decided by the config, not by pace_fps, which is only known once the file is open
        return not self.config.realtime

    @property
    def file_fps(self) -> float | None:
        """The frame rate the file states (known once opened)."""
        return self._file_fps

    def describe(self) -> str:
        return f"video {self.config.path}"

    def preflight(self) -> list[str]:
        problems = _file_problems(self.config.path)
        if problems:
            return problems
        try:
            cap, _ = _open_capture(self.config.path)
        except SourceError as exc:
            return [f"path: {exc}"]
        cap.release()
        return []

    def _open(self) -> None:
        problems = _file_problems(self.config.path)
        if problems:
            raise SourceError(problems[0].removeprefix("path: "))
        if self._tries_nvdec() and self._open_nvdec():
            return
        self._cap, self._first = _open_capture(self.config.path)
        count = self._cap.get(cv2.CAP_PROP_FRAME_COUNT)
        self._frame_count = int(count) if 0 < count < 1e9 else 0
        self._position, self._bad_run = 1, 0
        skip, self._skip = self._skip, 0
        if skip > 0:  # grab() without decoding to an image: the next read is frame `skip`, exactly
            self._first = None
            for _ in range(skip - 1):
                self._cap.grab()
            self._position = skip
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        if not 0 < fps <= 1000:
            if self.config.realtime and self._file_fps is None:
                log.warning("source '%s': %s states no usable frame rate (%r); pacing at %.0f fps",
                            self.id, self.config.path, fps, FALLBACK_FPS)
            fps = FALLBACK_FPS
        self._file_fps = fps

    def _open_nvdec(self) -> bool:
        """Open the NVDEC decoder (decode: nvdec, or auto where it works); False: decode on the CPU."""
        reader, first, self._spare_nvdec = self._spare_nvdec, None, None
        if reader is not None:  # looping: the same decoder from the top of the file
            try:
                reader.rewind()
                first = reader.read()
            except Exception as exc:
                log.info("source '%s': NVDEC decoder cannot start the file again (%s); creating a new one",
                         self.id, exc)
            if first is None:
                reader.close()
                reader = None
        try:
            if reader is None:
                reader = nvdec.NvdecReader(self.config.path, self.config.gpu, matrix=self.config.color_matrix)
                first = reader.read()
            if first is None:
                reader.close()
                raise nvdec.NvdecUnavailable(f"NVDEC decoded no frame of {self.config.path}")
        except nvdec.NvdecUnavailable as exc:
            return self._nvdec_unavailable(exc)
        self._nvdec_started(reader)
        skip, self._skip = self._skip, 0
        position = 1
        if skip > 0:  # a reload resumes at frame `skip`: decode and drop the ones before it (back to the pool)
            first = None
            for _ in range(skip - 1):
                first = reader.read()
                if first is None:
                    break
            first, position = reader.read(), skip + 1  # frame `skip` is read: it goes out first
        self._nvdec, self._first_device, self._nvdec_ended = reader, first, False
        self._frame_count, self._position, self._bad_run = 0, position, 0
        fps = reader.fps
        self._file_fps = fps if 0 < fps <= 1000 else FALLBACK_FPS
        return True

    def _read(self) -> np.ndarray | DeviceImage | None:
        if self._nvdec is not None:
            return self._read_nvdec()
        if self._first is not None:
            first, self._first = self._first, None
            return first
        if self._cap is None:
            return None
        ok, image = self._cap.read()
        if ok and image is not None:
            self._position += 1
            self._bad_run = 0
            return image
        # A failed read is the end only when every frame the file states has been read or failed; before
        # that it is a corrupt frame: skip it, count it, and give up only after a run of them.
        at = self._position
        self._position += 1
        self._bad_run += 1
        if self._frame_count and at >= self._frame_count:
            return None
        if self._bad_run >= self.config.max_bad_run:
            if not self._frame_count:
                return None  # no stated length: a run of failed reads is how such a file ends
            raise SourceError(f"gave up after {self._bad_run} undecodable frames in a row at frame {at} of the "
                              f"{self._frame_count} the file states (sources[].max_bad_run: "
                              f"{self.config.max_bad_run}); the file is damaged")
        raise BadFrame("cannot be decoded")

    def _read_nvdec(self) -> DeviceImage | None:
        if self._first_device is not None:
            first, self._first_device = self._first_device, None
            return first
        try:
            image = self._nvdec.read()
        except Exception as exc:  # a packet the decoder rejects: a bad frame, as on the CPU path
            self._position += 1
            self._bad_run += 1
            if self._bad_run >= self.config.max_bad_run:
                raise SourceError(f"gave up after {self._bad_run} undecodable frames in a row (NVDEC: {exc}; "
                                  f"sources[].max_bad_run: {self.config.max_bad_run}); the file is damaged") from exc
            raise BadFrame(f"NVDEC cannot decode it: {exc}") from exc
        if image is not None:
            self._position += 1
            self._bad_run = 0
        else:
            self._nvdec_ended = True
        return image

    def _input_position(self) -> int:
        return self._position

    def _resume_input(self, position: int) -> None:
        self._skip = position
        log.info("source '%s': reloaded: %s resumes at frame %d of the file", self.id, self.config.path, position)

    def _close(self) -> None:
        if self._first is not None:  # opened, but its first frame never went out: not read
            self._position -= 1
        self._first = None
        if self._first_device is not None:  # likewise for the first frame decoded on the GPU
            self._position -= 1
        self._first_device = None
        reader, self._nvdec = self._nvdec, None
        keep = reader is not None and self._nvdec_ended and self.config.loop and not self._stop.is_set()
        if keep:
            self._spare_nvdec = reader  # the next pass rewinds it
        elif reader is not None:
            reader.close()
        if not keep and self._spare_nvdec is not None:
            self._spare_nvdec.close()
            self._spare_nvdec = None
        if self._cap is not None:
            self._cap.release()
            self._cap = None
