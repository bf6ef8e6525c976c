"""Decoders: raw model outputs -> detections in source-image pixels.

Each decoder module holds its config model (tied by a `type` literal) and its class; `DecoderConfig` gathers
the configs into a discriminated union and `DECODERS` maps the type key to the class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Union

from pydantic import Field

from edgeinfer.decoders.base import DecodeError, Decoder, Detection
from edgeinfer.decoders.fit import check_decoder_fit
from edgeinfer.decoders.labels import label_for, load_labels
from edgeinfer.decoders.yolo import YoloDecoder, YoloDecoderConfig

# A one-member Union for now, so pydantic still validates it as a tagged union (an unknown `type` gets a
# message listing the known tags); more decoders (detr, classify, segment) join it with their own type key.
DecoderConfig = Annotated[Union[YoloDecoderConfig], Field(discriminator="type")]  # noqa: UP007

DECODERS: dict[str, type[Decoder]] = {"yolo": YoloDecoder}


def create_decoder(
    config: YoloDecoderConfig, labels: Sequence[str], output_shapes: Sequence[Sequence[Any]]
) -> Decoder:
    """The decoder for `config.type`, checked against the model's declared output shapes."""
    try:
        decoder_class = DECODERS[config.type]
    except KeyError:
        raise ValueError(f"unknown decoder type {config.type!r}; known: {sorted(DECODERS)}") from None
    return decoder_class(config, labels, output_shapes)


__all__ = [
    "DECODERS",
    "DecodeError",
    "Decoder",
    "DecoderConfig",
    "Detection",
    "YoloDecoder",
    "YoloDecoderConfig",
    "check_decoder_fit",
    "create_decoder",
    "label_for",
    "load_labels",
]
