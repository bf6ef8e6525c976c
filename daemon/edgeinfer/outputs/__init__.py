"""Outputs, registered by their `type:` key."""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from .base import Output, OutputConfigBase, OutputError
from .jsonl import JsonlOutput, JsonlOutputConfig

OUTPUT_TYPES: dict[str, type[Output]] = {"jsonl": JsonlOutput}

# a Union of one member still gets the discriminator, so an unknown `type` names the allowed values
OutputConfig = Annotated[Union[JsonlOutputConfig], Field(discriminator="type")]  # noqa: UP007


def create_output(config: OutputConfigBase) -> Output:
    return OUTPUT_TYPES[config.type](config, config.id or config.type)


__all__ = ["OUTPUT_TYPES", "Output", "OutputConfig", "OutputError", "create_output"]
