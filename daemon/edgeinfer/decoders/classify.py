"""Image classifiers: one score vector per image ([B, nc], or [B, nc, 1, 1] from a conv head) -> the top-k
classes with their labels.

`activation`: `softmax` for logits, `sigmoid` for multi-label heads, `none` for outputs that are already
probabilities (Ultralytics classify exports and most Paddle exports end in a softmax). `auto` (the default)
looks at each vector: all values in [0, 1] summing to 1 (within 1e-3) are probabilities and kept as they are;
anything else gets a softmax. The ranking is the same either way; only the published scores depend on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from edgeinfer.decoders.base import (
    DecodeError,
    Decoder,
    DecoderContext,
    check_batch_item,
    check_outputs,
    normalize_shape,
    resolve_class_filter,
    validate_classes,
)
from edgeinfer.decoders.labels import label_for
from edgeinfer.preprocess.cpu import Transform
from edgeinfer.results import Classification, Classifications
from edgeinfer.schema import StrictModel


class ClassifyDecoderConfig(StrictModel):
    type: Literal["classify"]
    top_k: int = Field(5, gt=0)
    conf_threshold: float = Field(0.0, ge=0.0, le=1.0)  # classes below this score are not published
    activation: Literal["auto", "softmax", "sigmoid", "none"] = "auto"
    classes: list[int | str] | None = None  # rank only these class ids or names; None ranks all
    output: int = Field(0, ge=0, description="which model output holds the scores")

    @field_validator("classes")
    @classmethod
    def _classes_valid(cls, value: list[int | str] | None) -> list[int | str] | None:
        return validate_classes(value)


class ClassifyDecoder(Decoder):
    payload_type = Classifications

    def __init__(self, config: ClassifyDecoderConfig, labels: Sequence[str],
                 output_shapes: Sequence[Sequence[Any]], context: DecoderContext | None = None) -> None:
        super().__init__(labels)
        self.config = config
        if config.output >= len(output_shapes):
            raise DecodeError(f"output {config.output} does not exist: the model has {len(output_shapes)} "
                              "output(s)")
        shape = normalize_shape(output_shapes[config.output])
        if len(shape) not in (2, 4) or (len(shape) == 4 and shape[2:] != (1, 1)):
            raise DecodeError(f"a classifier output is [B, nc] (or [B, nc, 1, 1]), got {tuple(shape)}")
        self.num_classes = shape[1]
        if self.num_classes is not None and self.labels and len(self.labels) != self.num_classes:
            raise DecodeError(f"the model scores {self.num_classes} classes but {len(self.labels)} labels are "
                              "given; fix the labels file (or leave it out to use the model's own names)")
        self._classes = resolve_class_filter(config.classes, self.labels)

    def describe(self) -> str:
        classes = "?" if self.num_classes is None else self.num_classes
        return (f"classify: output {self.config.output} [B, {classes}], top {self.config.top_k}, activation "
                f"{self.config.activation}")

    def decode(self, outputs: Sequence[np.ndarray], index: int, transform: Transform) -> Classifications:
        check_outputs(outputs, self.config.output + 1, "the classify decoder")
        output = outputs[self.config.output]
        check_batch_item(output, index)
        scores = np.asarray(output[index], np.float64).reshape(-1)
        if self.num_classes is not None and scores.size != self.num_classes:
            raise DecodeError(f"classifier output has {scores.size} scores per image, expected {self.num_classes}")
        if not np.all(np.isfinite(scores)):
            raise DecodeError("classifier output holds NaN or infinite scores")
        scores = self._activate(scores)
        candidates = np.arange(scores.size) if self._classes is None else self._classes[self._classes < scores.size]
        order = candidates[np.argsort(-scores[candidates], kind="stable")][: self.config.top_k]
        return Classifications([
            Classification(int(class_id), label_for(self.labels, int(class_id)), float(scores[class_id]))
            for class_id in order if scores[class_id] >= self.config.conf_threshold])

    def _activate(self, scores: np.ndarray) -> np.ndarray:
        activation = self.config.activation
        if activation == "auto":
            is_probability = scores.min() >= 0.0 and scores.max() <= 1.0 and math.isclose(
                float(scores.sum()), 1.0, abs_tol=1e-3)
            activation = "none" if is_probability else "softmax"
        if activation == "softmax":
            exp = np.exp(scores - scores.max())
            return exp / exp.sum()
        if activation == "sigmoid":
            return 0.5 * (np.tanh(0.5 * scores) + 1.0)
        return scores
