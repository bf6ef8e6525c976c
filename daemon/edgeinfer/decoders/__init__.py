"""Decoders: raw model outputs -> detections, classes or dense maps in source-image terms.

Each decoder module holds its config model (tied by a `type` literal) and its class; `DecoderConfig` gathers
the configs into a discriminated union and `DECODERS` maps the type key to the class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Union

from pydantic import Field

from edgeinfer.decoders.base import (
    DecodeError,
    Decoder,
    DecoderContext,
    OutputInfo,
)
from edgeinfer.decoders.classify import ClassifyDecoder, ClassifyDecoderConfig
from edgeinfer.decoders.dense import DenseDecoder, DenseDecoderConfig
from edgeinfer.decoders.detr import DetrDecoder, DetrDecoderConfig
from edgeinfer.decoders.fit import check_decoder_fit
from edgeinfer.decoders.labels import label_for, load_labels
from edgeinfer.decoders.yolo import YoloDecoder, YoloDecoderConfig
from edgeinfer.decoders.yolo_heads import (
    YoloPoseDecoder,
    YoloPoseDecoderConfig,
    YoloSegmentDecoder,
    YoloSegmentDecoderConfig,
)
from edgeinfer.results import Classification, DenseMap, Detection, Payload

DecoderConfig = Annotated[
    Union[YoloDecoderConfig, DetrDecoderConfig, ClassifyDecoderConfig, DenseDecoderConfig,  # noqa: UP007
          YoloSegmentDecoderConfig, YoloPoseDecoderConfig],
    Field(discriminator="type"),
]

DECODERS: dict[str, type[Decoder]] = {
    "yolo": YoloDecoder,
    "detr": DetrDecoder,
    "classify": ClassifyDecoder,
    "dense": DenseDecoder,
    "yolo-segment": YoloSegmentDecoder,
    "yolo-pose": YoloPoseDecoder,
}


def declared_payload(config: Any) -> type[Payload]:
    """The payload type (detections, classifications, dense) a decoder config yields, before any model loads."""
    return DECODERS[config.type].payload_type


def create_decoder(
    config: Any, labels: Sequence[str], output_shapes: Sequence[Sequence[Any]],
    context: DecoderContext | None = None,
) -> Decoder:
    """The decoder for `config.type`, checked against the model's declared outputs."""
    try:
        decoder_class = DECODERS[config.type]
    except KeyError:
        raise ValueError(f"unknown decoder type {config.type!r}; known: {sorted(DECODERS)}") from None
    return decoder_class(config, labels, output_shapes, context)  # type: ignore[call-arg]


__all__ = [
    "DECODERS",
    "Classification",
    "ClassifyDecoder",
    "ClassifyDecoderConfig",
    "DecodeError",
    "Decoder",
    "DecoderConfig",
    "DecoderContext",
    "DenseDecoder",
    "DenseDecoderConfig",
    "DenseMap",
    "DetrDecoder",
    "DetrDecoderConfig",
    "Detection",
    "OutputInfo",
    "YoloDecoder",
    "YoloDecoderConfig",
    "YoloPoseDecoder",
    "YoloPoseDecoderConfig",
    "YoloSegmentDecoder",
    "YoloSegmentDecoderConfig",
    "check_decoder_fit",
    "create_decoder",
    "declared_payload",
    "label_for",
    "load_labels",
]
