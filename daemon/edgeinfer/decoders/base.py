"""The decoder interface: raw model outputs of one batch item -> detections in source-image pixels."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeinfer.decoders.labels import label_for
from edgeinfer.preprocess.cpu import Transform


class DecodeError(ValueError):
    """Model outputs that do not have the shape the decoder expects."""


@dataclass(slots=True)
class Detection:
    class_id: int
    label: str
    score: float
    bbox: tuple[float, float, float, float]  # x1, y1, x2, y2 in source-image pixels

    def to_dict(self) -> dict[str, Any]:
        """Plain Python values for JSON and messages; rounding keeps records short without losing meaning."""
        return {
            "class_id": int(self.class_id),
            "label": self.label,
            "score": round(float(self.score), 4),
            "bbox": [round(float(value), 1) for value in self.bbox],
        }


class Decoder(ABC):
    """Turns one batch item of a model's outputs into detections."""

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = list(labels)

    @abstractmethod
    def decode(self, outputs: Sequence[np.ndarray], index: int, transform: Transform) -> list[Detection]:
        """`outputs` in the model's output order, batch first; `index` picks the batch item."""

    def make_detections(
        self, class_ids: np.ndarray, scores: np.ndarray, boxes: np.ndarray
    ) -> list[Detection]:
        """Detections from parallel arrays (boxes already in source pixels)."""
        return [
            Detection(class_id, label_for(self.labels, class_id), score, (x1, y1, x2, y2))
            for class_id, score, (x1, y1, x2, y2) in zip(
                class_ids.tolist(), scores.tolist(), boxes.tolist(), strict=True
            )
        ]


def normalize_shape(shape: Sequence[Any]) -> tuple[int | None, ...]:
    """A declared output shape with dynamic entries (None, symbolic names, -1, 0) turned into None."""
    return tuple(
        int(value) if isinstance(value, (int, np.integer)) and value > 0 else None for value in shape
    )


def check_batch_item(output: np.ndarray, index: int, name: str = "output 0") -> None:
    if not 0 <= index < output.shape[0]:
        raise DecodeError(f"batch index {index} out of range for {name} of shape {tuple(output.shape)}")
