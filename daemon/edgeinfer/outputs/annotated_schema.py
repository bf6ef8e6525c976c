"""Config of the `annotated` output (results drawn on the frames, as video files or snapshots): no code."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from .schema import OutputConfigBase


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
