"""The config models of the built-in capture sources (the `sources[]` entries), without their code.

`edgeinfer.config` validates a config against these models without loading any source implementation; each
model's `type` literal is the key under which `sources/__init__.py` registers the implementation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import ConfigDict, Field, field_validator, model_validator

from ..schema import StrictModel


class ReconnectConfig(StrictModel):
    """Backoff between attempts to reopen a live source: initial_s, then x factor, capped at max_s."""

    initial_s: float = Field(0.5, gt=0, le=3600)
    max_s: float = Field(10.0, gt=0, le=3600)
    factor: float = Field(2.0, ge=1.0, le=10.0)

    @model_validator(mode="after")
    def _max_not_below_initial(self) -> ReconnectConfig:
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s ({self.max_s}) must be >= initial_s ({self.initial_s})")
        return self


class SourceConfigBase(StrictModel):
    id: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-]*$", max_length=64)
    min_fps: float | None = Field(
        None, ge=0.001, le=10_000, description="the watchdog calls the source stale below this"
    )
    frame_id: str | None = Field(
        None, max_length=256, description="coordinate frame of the images (ROS header.frame_id); default: the id"
    )
    reconnect: ReconnectConfig = ReconnectConfig()

    @property
    def finite(self) -> bool:
        """True when the frames run out (a file, a folder, a synthetic run with a frame count): read from the
        config alone, so the watchdog and the preflight know it without building the source."""
        return False


class HardwareDecodeConfig(SourceConfigBase):
    """The keys of sources that NVDEC can decode (`video`, `rtsp`)."""

    decode: Literal["auto", "cpu", "nvdec"] = Field(
        "auto", description="cpu: OpenCV/FFmpeg into host memory; nvdec: the NVIDIA GPU's hardware decoder into "
        "GPU memory (PyNvVideoCodec); auto: nvdec where PyNvVideoCodec and a GPU are present, the codec is one "
        "NVDEC decodes and every model reading the source preprocesses on the GPU, else cpu")
    gpu: int = Field(0, ge=0, le=63, description="the GPU whose NVDEC decodes (decode: nvdec or auto)")
    color_matrix: Literal["bt601", "bt709"] = Field(
        "bt601", description="nvdec: YUV -> RGB matrix (limited range). bt601 is what FFmpeg, and so OpenCV's "
        "decode, assume for an untagged stream; bt709 for HD cameras that say so")


class VideoSourceConfig(HardwareDecodeConfig):
    type: Literal["video"] = "video"
    path: Path
    loop: bool = False
    realtime: bool = False  # false: every frame, as fast as consumed; true: at the file's fps, newest wins
    # A corrupt stretch in a file fails a few reads in a row and the decoder then resynchronises at the next
    # keyframe; only this many unreadable frames in a row before the file's stated end mean it is broken.
    max_bad_run: int = Field(50, ge=1, le=100_000, description="give up after this many bad frames in a row")

    @property
    def finite(self) -> bool:
        return True


class ImagesSourceConfig(SourceConfigBase):
    type: Literal["images"] = "images"
    path: Path  # a folder
    pattern: str = "*"  # glob inside the folder; "**/*.png" searches subfolders
    loop: bool = False
    realtime: bool = False  # false: every image, as fast as consumed; true: at `fps`, newest wins
    fps: float = Field(10.0, gt=0, le=1000)

    @field_validator("pattern")
    @classmethod
    def _relative_glob(cls, pattern: str) -> str:
        if not pattern.strip():
            raise ValueError("must not be empty (use '*' for every image in the folder)")
        if pattern.startswith("/") or ".." in Path(pattern).parts:
            raise ValueError("must be a glob relative to `path`, e.g. '*.jpg' (no leading '/' or '..')")
        return pattern

    @property
    def finite(self) -> bool:
        return True


class CameraSourceConfig(SourceConfigBase):
    type: Literal["camera"] = "camera"
    device: int | str  # index (0 = /dev/video0) or device path
    width: int | None = Field(None, gt=0, le=16384)
    height: int | None = Field(None, gt=0, le=16384)
    fps: float | None = Field(None, gt=0, le=1000)
    fourcc: str | None = None  # pixel format asked of the camera, e.g. MJPG (USB cameras: more fps)

    @field_validator("device")
    @classmethod
    def _index_or_path(cls, device: int | str) -> int | str:
        if isinstance(device, str):
            if device.strip().isdigit():
                return int(device)
            if not device.startswith("/"):
                raise ValueError(f"'{device}' is neither a camera index (0, 1, ...) nor a device path "
                                 "(/dev/video0, /dev/v4l/by-id/...)")
            return device
        if device < 0:
            raise ValueError("a camera index is 0 or more")
        return device

    @field_validator("fourcc")
    @classmethod
    def _four_characters(cls, fourcc: str | None) -> str | None:
        if fourcc is not None and (len(fourcc) != 4 or not fourcc.isascii()):
            raise ValueError(f"'{fourcc}' is not a four-character code such as MJPG, YUYV or H264")
        return fourcc


STREAM_SCHEMES = ("rtsp", "rtsps", "http", "https")


class RtspSourceConfig(HardwareDecodeConfig):
    # URLs may hold a password: validation errors must not echo the input.
    model_config = ConfigDict(hide_input_in_errors=True)

    type: Literal["rtsp"] = "rtsp"
    url: str
    open_timeout_ms: int = Field(5000, ge=100, le=60000)
    read_timeout_ms: int = Field(2000, ge=100, le=60000)  # also bounds how long stop() may wait on a read
    transport: Literal["tcp", "udp"] = "tcp"  # RTSP only; tcp survives lossy Wi-Fi without smeared frames

    @field_validator("url")
    @classmethod
    def _stream_url(cls, url: str) -> str:
        parts = urlsplit(url.strip())
        if parts.scheme.lower() not in STREAM_SCHEMES:
            raise ValueError(f"'{redact_url(url)}' must start with one of "
                             + ", ".join(f"{s}://" for s in STREAM_SCHEMES))
        if not parts.hostname:
            raise ValueError(f"'{redact_url(url)}' names no host")
        try:
            parts.port  # noqa: B018 -- raises on a port that is not a number
        except ValueError as exc:
            raise ValueError(f"'{redact_url(url)}': {exc}") from None
        return url.strip()


def redact_url(url: str) -> str:
    """The URL without its password, for logs and messages."""
    parts = urlsplit(url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    netloc = f"{userinfo.split(':', 1)[0]}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


EXAMPLE_TAIL = "... ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1"


class GStreamerSourceConfig(SourceConfigBase):
    type: Literal["gstreamer"] = "gstreamer"
    pipeline: str

    @field_validator("pipeline")
    @classmethod
    def _ends_in_appsink(cls, pipeline: str) -> str:
        pipeline = pipeline.strip()
        last_element = pipeline.rsplit("!", 1)[-1].split()
        if not last_element or last_element[0] != "appsink":
            raise ValueError(f"must end in 'appsink' (OpenCV takes frames from it), e.g. '{EXAMPLE_TAIL}'")
        if "!" not in pipeline:
            raise ValueError(f"holds only the appsink; put the source elements before it: '{EXAMPLE_TAIL}'")
        return pipeline


class SyntheticSourceConfig(SourceConfigBase):
    type: Literal["synthetic"] = "synthetic"
    width: int = Field(640, ge=16, le=8192)
    height: int = Field(480, ge=16, le=8192)
    fps: float = Field(30.0, gt=0, le=1000)
    frames: int | None = Field(None, ge=1)  # set: ends after this many frames (every one delivered)

    @property
    def finite(self) -> bool:
        return self.frames is not None
