"""Capture sources: one module per kind, each holding its config model and its code.

The config models form a discriminated union on `type`; `SOURCE_TYPES` maps each type key to its class, so
the pipeline builds sources with `create_source` and never names a concrete plugin.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from ..health import HealthReporter
from ..mailbox import FrameSink
from .base import (
    BadFrame,
    ReconnectConfig,
    Source,
    SourceConfigBase,
    SourceError,
)
from .camera import CameraSource, CameraSourceConfig
from .gstreamer import GStreamerSource, GStreamerSourceConfig
from .images import ImagesSource, ImagesSourceConfig
from .ros2 import Ros2Source, Ros2SourceConfig  # imports rclpy only when opened
from .stream import RtspSource, RtspSourceConfig
from .synthetic import SyntheticSource, SyntheticSourceConfig
from .video import VideoSource, VideoSourceConfig
from .zmq import ZmqSource, ZmqSourceConfig  # imports pyzmq only when the source opens

SourceConfig = Annotated[
    VideoSourceConfig
    | ImagesSourceConfig
    | CameraSourceConfig
    | RtspSourceConfig
    | GStreamerSourceConfig
    | SyntheticSourceConfig
    | ZmqSourceConfig
    | Ros2SourceConfig,
    Field(discriminator="type"),
]

SOURCE_TYPES: dict[str, type[Source]] = {
    "video": VideoSource,
    "images": ImagesSource,
    "camera": CameraSource,
    "rtsp": RtspSource,
    "gstreamer": GStreamerSource,
    "synthetic": SyntheticSource,
    "zmq": ZmqSource,
    "ros2": Ros2Source,
}


def create_source(config: SourceConfigBase, sink: FrameSink, reporter: HealthReporter) -> Source:
    """The source for `config` (not started), delivering to `sink` and reporting to `reporter`."""
    kind = getattr(config, "type", None)
    try:
        source_class = SOURCE_TYPES[kind]  # type: ignore[index]
    except KeyError:
        raise ValueError(f"unknown source type {kind!r}; known: {', '.join(SOURCE_TYPES)}") from None
    return source_class(config, sink, reporter)


__all__ = [
    "SOURCE_TYPES",
    "BadFrame",
    "CameraSource",
    "CameraSourceConfig",
    "GStreamerSource",
    "GStreamerSourceConfig",
    "ImagesSource",
    "ImagesSourceConfig",
    "ReconnectConfig",
    "RtspSource",
    "RtspSourceConfig",
    "Source",
    "SourceConfig",
    "SourceConfigBase",
    "SourceError",
    "SyntheticSource",
    "SyntheticSourceConfig",
    "VideoSource",
    "VideoSourceConfig",
    "ZmqSource",
    "ZmqSourceConfig",
    "create_source",
]
