"""Fitting a model to its config: which input is the image, what fills the others, which names, input size and
decoder apply -- from the config where it says, from the model's own metadata where it does not.

Order of precedence, per item: the config, then the model file's metadata (see decoders/metadata.py), then
the default. Every choice is recorded in `notes` with its reason; `run` logs them and `check` prints them.

Second inputs: DETR-family exports (D-FINE, RT-DETR from lyuwenyu, PaddleDetection) take the image size next
to the image and scale their normalised boxes by it. They are filled with the *network input* size, so the
model answers in input pixels and the letterbox is undone like for every other detector (filling in the
frame size would only be right for a stretched input). PaddleDetection's `scale_factor` is 1 for the same
reason. The arrays depend only on the batch size, so they are built once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from .decoders import (
    ClassifyDecoderConfig,
    DecodeError,
    Decoder,
    DecoderContext,
    DetrDecoderConfig,
    OutputInfo,
    YoloDecoderConfig,
    YoloPoseDecoderConfig,
    YoloSegmentDecoderConfig,
    create_decoder,
    load_labels,
)
from .decoders.metadata import DECODED_TASKS, MetadataError, ModelMetadata, parse_metadata

# name -> what it holds per image, as (first, second) of the network input's (width, height) or ones
SIZE_INPUTS: dict[str, str] = {
    "orig_target_sizes": "wh",  # D-FINE, RT-DETR (lyuwenyu): [B, 2] = (w, h)
    "orig_size": "wh",
    "orig_sizes": "wh",
    "target_sizes": "wh",
    "im_shape": "hw",  # PaddleDetection: [B, 2] = (h, w) of the network input
    "image_shape": "hw",
    "scale_factor": "ones",  # PaddleDetection: boxes / scale_factor; 1 keeps them in input pixels
}


class FitError(ValueError):
    """The model and its config do not fit; `key` is the config key path below the model to fix."""

    def __init__(self, key: str, message: str):
        self.key = key
        super().__init__(f"{key}: {message}" if key else message)


@dataclass
class SizeInputs:
    """The non-image inputs and the constant arrays that fill them, one set per batch size."""

    specs: list[Any]  # TensorSpec
    input_wh: tuple[int, int]
    _cache: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)

    def feeds(self, batch: int) -> dict[str, np.ndarray]:
        cached = self._cache.get(batch)
        if cached is None:
            cached = self._cache[batch] = {spec.name: self._array(spec, batch) for spec in self.specs}
        return cached

    def _array(self, spec: Any, batch: int) -> np.ndarray:
        width, height = self.input_wh
        values = {"wh": (width, height), "hw": (height, width), "ones": (1, 1)}[SIZE_INPUTS[spec.name]]
        return np.tile(np.asarray(values, dtype=spec.dtype), (batch, 1))


@dataclass
class Fitting:
    image_input: Any  # TensorSpec of the image
    image_shape: tuple[Any, ...]  # what the preprocessor is built for: (batch, ...) with H/W filled in
    labels: list[str]
    decoder: Decoder
    decoder_config: Any
    size_inputs: SizeInputs | None
    metadata: ModelMetadata
    notes: list[str]

    def feeds(self, image: np.ndarray, batch: int) -> dict[str, np.ndarray]:
        feeds = {self.image_input.name: image}
        if self.size_inputs is not None:
            feeds.update(self.size_inputs.feeds(batch))
        return feeds

    def stage_image_spec(self) -> Any:
        """The image input with open height/width filled in (from preprocess.size or the metadata's imgsz),
        batch left as the model declares it: what the input stage builds its buffers for."""
        spec = self.image_input
        return replace(spec, shape=(spec.shape[0], *self.image_shape[1:]))

    def size_feeds(self) -> Any:
        """A batch size -> {name: array} callable for the model's size inputs, or None when it has none."""
        return None if self.size_inputs is None else self.size_inputs.feeds


def _shape_text(shape: Sequence[Any]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def fit_model(config: Any, inputs: Sequence[Any], outputs: Sequence[Any], metadata: dict[str, str],
              batch: int) -> Fitting:
    """Fit `config` (a ModelConfig) to a loaded backend's `inputs`, `outputs` and `metadata`."""
    notes: list[str] = []
    try:
        meta = parse_metadata(metadata)
    except MetadataError as exc:
        raise FitError("path", f"the model's metadata cannot be read: {exc}") from exc

    image, others = _split_inputs(inputs)
    layout_nchw = config.preprocess.layout == "nchw"
    height, width = (image.shape[2], image.shape[3]) if layout_nchw else (image.shape[1], image.shape[2])
    preprocess_size = config.preprocess.size
    if preprocess_size is None and (height is None or width is None):
        if meta.imgsz is None:
            raise FitError("preprocess.size", f"the image input {image.name} {_shape_text(image.shape)} leaves "
                           "its height/width open and the model's metadata gives no imgsz; set "
                           "preprocess.size: [height, width]")
        preprocess_size = meta.imgsz
        notes.append(f"input size {meta.imgsz[0]}x{meta.imgsz[1]} (h x w) from the model's metadata (imgsz)")
    # the preprocessor compares a configured size with fixed model dims itself; open dims take the size
    model_h, model_w = height, width
    if preprocess_size is not None:
        height, width = preprocess_size
    shape_h = model_h if model_h is not None else height
    shape_w = model_w if model_w is not None else width
    if layout_nchw:
        image_shape = (batch, image.shape[1], shape_h, shape_w)
    else:
        image_shape = (batch, shape_h, shape_w, image.shape[3])

    size_inputs = None
    if others:
        size_inputs = SizeInputs(others, (int(width), int(height)))
        for spec in others:
            notes.append(f"input {spec.name} {_shape_text(spec.shape)} filled with the network input size "
                         f"({SIZE_INPUTS[spec.name]}: {width}x{height})")

    labels = _labels(config, meta, notes)
    decoder_config = _decoder_config(config, meta, notes)
    context = DecoderContext(
        outputs=tuple(OutputInfo(o.name, tuple(o.shape), o.dtype) for o in outputs),
        input_size=(int(width), int(height)),
        has_size_input=size_inputs is not None,
    )
    try:
        decoder = create_decoder(decoder_config, labels, [tuple(o.shape) for o in outputs], context)
    except DecodeError as exc:
        raise FitError("decoder", f"does not fit the model's outputs: {exc}") from exc
    notes.append(f"decoder: {decoder.describe()}")
    return Fitting(image, image_shape, labels, decoder, decoder_config, size_inputs, meta, notes)


def _split_inputs(inputs: Sequence[Any]) -> tuple[Any, list[Any]]:
    if not inputs:
        raise FitError("path", "the model has no inputs")
    images = [spec for spec in inputs if len(spec.shape) == 4]
    if len(images) != 1:
        listed = ", ".join(f"{s.name} {_shape_text(s.shape)}" for s in inputs)
        raise FitError("path", f"expected exactly one 4-D image input, found {len(images)} among: {listed}")
    others = [spec for spec in inputs if spec is not images[0]]
    for spec in others:
        if spec.name not in SIZE_INPUTS or len(spec.shape) != 2 or spec.shape[1] not in (None, 2):
            raise FitError("path", f"the model's input {spec.name} {_shape_text(spec.shape)} is not one this "
                           f"daemon can fill; known size inputs ([B, 2]): {', '.join(SIZE_INPUTS)}")
    return images[0], others


def _labels(config: Any, meta: ModelMetadata, notes: list[str]) -> list[str]:
    if config.labels:
        try:
            labels = load_labels(config.labels)
        except (OSError, ValueError) as exc:
            raise FitError("labels", str(exc)) from exc
        notes.append(f"labels: {len(labels)} names from {config.labels}")
        return labels
    if meta.names:
        notes.append(f"labels: {len(meta.names)} names from the model's metadata ({meta.read['names']})")
        return list(meta.names)
    notes.append("labels: none (classes are published as class_<id>)")
    return []


def _decoder_config(config: Any, meta: ModelMetadata, notes: list[str]) -> Any:
    if "decoder" in config.model_fields_set:
        if config.decoder.type == "yolo-pose" and config.decoder.keypoints is None and meta.kpt_shape:
            notes.append(f"keypoints {list(meta.kpt_shape)} from the model's metadata (kpt_shape)")
            return config.decoder.model_copy(update={"keypoints": meta.kpt_shape})
        return config.decoder
    task = meta.task
    if task is None:
        return config.decoder  # the default: yolo with layout auto
    if task not in DECODED_TASKS:
        raise FitError("decoder", f"the model's metadata says task {task!r}, which is not decoded yet (only "
                       f"{', '.join(DECODED_TASKS)}); export a detect model, or set decoder explicitly to decode "
                       "its boxes only")
    if task == "classify":
        notes.append("decoder type classify from the model's metadata (task)")
        return ClassifyDecoderConfig(type="classify")
    if task == "segment":
        notes.append("decoder type yolo-segment from the model's metadata (task segment)")
        return YoloSegmentDecoderConfig()
    if task == "pose":
        notes.append("decoder type yolo-pose from the model's metadata (task pose"
                     + (f", kpt_shape {list(meta.kpt_shape)})" if meta.kpt_shape else ")"))
        return YoloPoseDecoderConfig(keypoints=meta.kpt_shape)
    if meta.is_transformer_detector:
        notes.append("decoder type detr, layout combined, from the model's metadata (task detect, description "
                     f"{meta.description[:40]!r})")
        return DetrDecoderConfig(type="detr", layout="combined")
    notes.append("decoder type yolo from the model's metadata (task detect)")
    return YoloDecoderConfig()
