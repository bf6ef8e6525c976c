"""The config models of the outputs (the `outputs[]` entries), without their code."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..schema import StrictModel


class OutputConfigBase(StrictModel):
    id: str | None = Field(default=None, pattern=r"^[A-Za-z][A-Za-z0-9_\-]*$", description="default: the type")
    heartbeat: bool = Field(default=True, description="also publish the supervisor's heartbeat here")


class JsonlRotateConfig(StrictModel):
    max_bytes: int = Field(ge=4096, description="rotate before a record would take the file past this size")
    keep: int = Field(3, ge=1, le=100, description="rotated files kept: PATH.1 (newest) .. PATH.<keep>")


class JsonlOutputConfig(OutputConfigBase):
    type: Literal["jsonl"] = "jsonl"
    path: str = Field(default="-", description="'-' for stdout, else a file appended to")
    # Off unless asked for: at one per watchdog cycle they swamped the detections on stdout (918 heartbeat lines
    # for 250 detection lines in the demo) and filled a file at ~2.1 GB a day; the other channels (ZeroMQ, ROS,
    # systemd's STATUS=) carry them.
    heartbeat: bool = Field(default=False, description="also write the watchdog's heartbeats here")
    heartbeat_interval_s: float = Field(
        default=0, ge=0, le=86_400, description="with heartbeat: at most one per this many seconds, plus every "
        "change of state; 0 = every watchdog cycle")
    rotate: JsonlRotateConfig | None = Field(default=None, description="size-based rotation of a file output")

    @model_validator(mode="after")
    def _rotate_needs_a_file(self):
        if self.rotate is not None and self.path == "-":
            raise ValueError("rotate: needs a file path (path is '-', stdout)")
        return self


class AnnotatedOutputConfig(OutputConfigBase):
    type: Literal["annotated"] = "annotated"
    heartbeat: bool = False  # nothing to draw from a heartbeat
    dir: Path = Field(description="folder the videos or snapshots are written into (created)")
    mode: Literal["video", "snapshots"] = Field("video", description="video: every result drawn into a video "
                                                "file per model and source; snapshots: a JPEG when one of "
                                                "`classes` is seen")
    models: list[str] | None = Field(None, description="only these models (default: all)")
    sources: list[str] | None = Field(None, description="only these sources (default: all)")
    fps: float = Field(25.0, gt=0, le=1000, description="the frame rate written into the video files")
    codec: str = Field("mp4v", min_length=4, max_length=4, description="FourCC of the video codec (OpenCV)")
    container: Literal["mp4", "avi", "mkv"] = "mp4"
    rotate_mb: float | None = Field(None, gt=0, description="start a new file past this size (MB)")
    rotate_s: float | None = Field(None, gt=0, description="start a new file after this many seconds")
    classes: list[str] | None = Field(None, description="snapshots: the class names that trigger one")
    min_score: float = Field(0.5, ge=0, le=1, description="snapshots: the least score that triggers one")
    snapshot_every_s: float = Field(2.0, ge=0, description="snapshots: at most one per model, source and "
                                    "class in this many seconds")
    jpeg_quality: int = Field(90, ge=10, le=100)
    queue: int = Field(32, ge=1, le=10_000, description="results waiting for the drawing thread; beyond it "
                       "the oldest is dropped (counted), so drawing never slows inference")

    @field_validator("codec")
    @classmethod
    def _fourcc(cls, value: str) -> str:
        if not value.isascii() or not value.isprintable():
            raise ValueError(f"codec must be 4 printable ASCII characters (a FourCC such as mp4v, MJPG, avc1), "
                             f"got {value!r}")
        return value

    @model_validator(mode="after")
    def _snapshots_need_classes(self) -> AnnotatedOutputConfig:
        if self.mode == "snapshots" and not self.classes:
            raise ValueError("mode 'snapshots' needs `classes`: the class names that trigger a snapshot")
        return self


DEFAULT_PORT = 8321  # the status page's port unless configured


class HttpOutputConfig(OutputConfigBase):
    type: Literal["http"] = "http"
    host: str = Field("127.0.0.1", description="address to listen on; 127.0.0.1 keeps the page on this box, "
                      "0.0.0.0 opens it to the network (set a token then)")
    port: int = Field(DEFAULT_PORT, ge=0, le=65535, description="TCP port; 0 picks a free one (logged)")
    token: str | None = Field(None, min_length=8, description="access token: every request must carry it "
                              "(Authorization: Bearer TOKEN, or ?token=TOKEN); better: token_file")
    token_file: Path | None = Field(None, description="a file holding the access token (first line)")
    view_fps: float = Field(10.0, gt=0, le=120, description="most live-view frames encoded per second and "
                            "view, only while a viewer is connected")
    jpeg_quality: int = Field(75, ge=10, le=100)
    view_max_width: int = Field(960, ge=64, le=8192, description="live-view frames wider than this are scaled "
                                "down before encoding")
    metrics: bool = Field(True, description="serve Prometheus /metrics")

    @model_validator(mode="after")
    def _one_token(self) -> HttpOutputConfig:
        if self.token is not None and self.token_file is not None:
            raise ValueError("set token or token_file, not both")
        return self
