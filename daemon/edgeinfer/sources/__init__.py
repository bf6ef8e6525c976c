"""Capture sources: `schema.py` holds every source's config model, one module per kind holds its code.

`SOURCE_TYPES` maps each `type:` key to its implementation, imported on first use; the pipeline builds sources
with `create_source` and never names a concrete plugin. A new source is one module (its class, subclassing
`Source`) plus its config model in `schema.py` and one line here.
"""

from __future__ import annotations

from ..health import HealthReporter
from ..mailbox import FrameSink
from ..plugins import Registry
from .base import BadFrame, Source, SourceError
from .schema import ReconnectConfig, SourceConfigBase

SOURCE_TYPES: Registry[Source] = Registry("source", {
    "video": "edgeinfer.sources.video:VideoSource",
    "images": "edgeinfer.sources.images:ImagesSource",
    "camera": "edgeinfer.sources.camera:CameraSource",
    "rtsp": "edgeinfer.sources.stream:RtspSource",
    "gstreamer": "edgeinfer.sources.gstreamer:GStreamerSource",
    "synthetic": "edgeinfer.sources.synthetic:SyntheticSource",
    "zmq": "edgeinfer.transports.zmq.source:ZmqSource",
    "ros2": "edgeinfer.transports.ros.source:Ros2Source",
})


def create_source(config: SourceConfigBase, sink: FrameSink, reporter: HealthReporter) -> Source:
    """The source for `config` (not started), delivering to `sink` and reporting to `reporter`."""
    try:
        source_class = SOURCE_TYPES[getattr(config, "type", "")]
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    return source_class(config, sink, reporter)


__all__ = [
    "SOURCE_TYPES",
    "BadFrame",
    "ReconnectConfig",
    "Source",
    "SourceConfigBase",
    "SourceError",
    "create_source",
]
