"""Outputs, registered by their `type:` key."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from .annotated import AnnotatedOutput  # draws with OpenCV on its own thread
from .annotated_schema import AnnotatedOutputConfig
from .base import Output, OutputConfigBase, OutputError
from .http import HttpOutput  # imports aiohttp and prometheus-client only in HttpOutput.open()
from .http_schema import HttpOutputConfig
from .jsonl import JsonlOutput, JsonlOutputConfig
from .ros2 import Ros2Output, Ros2OutputConfig  # imports rclpy only in Ros2Output.open()
from .zmq import ZmqOutput, ZmqOutputConfig  # imports pyzmq only in ZmqOutput.open()

OUTPUT_TYPES: dict[str, type[Output]] = {"jsonl": JsonlOutput, "zmq": ZmqOutput, "ros2": Ros2Output,
                                        "http": HttpOutput, "annotated": AnnotatedOutput}

# the discriminator makes an unknown `type` name the allowed values, and errors point into the right model
OutputConfig = Annotated[Union[JsonlOutputConfig, ZmqOutputConfig, Ros2OutputConfig,  # noqa: UP007
                               HttpOutputConfig, AnnotatedOutputConfig], Field(discriminator="type")]


def create_output(config: OutputConfigBase) -> Output:
    return OUTPUT_TYPES[config.type](config, config.id or config.type)


__all__ = ["OUTPUT_TYPES", "Output", "OutputConfig", "OutputError", "create_output"]
