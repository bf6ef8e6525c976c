"""The decoder interface: raw model outputs of one batch item -> detections, classes or a dense map, in
source-image terms.

A decoder says what it produces with `kind` and hands the pipeline the `Result` fields for one frame through
`result_fields`; detection decoders only implement `decode`.
"""

from __future__ import annotations

import base64
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

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


@dataclass(slots=True)
class Classification:
    class_id: int
    label: str
    score: float

    def to_dict(self) -> dict[str, Any]:
        return {"class_id": int(self.class_id), "label": self.label, "score": round(float(self.score), 4)}


@dataclass(slots=True)
class DenseMap:
    """A per-pixel map in source-image pixels (segmentation class ids, saliency, depth) and its summary.

    `summary` is what JSON outputs publish (the peak and its location, or the class shares); `png` is the map
    encoded as PNG when the decoder was asked for it (8-bit for saliency and class ids, 16-bit for depth).
    """

    task: str  # segmentation | saliency | depth
    map: np.ndarray  # [src_h, src_w]: float32 values, or uint8/uint16 class ids for segmentation
    summary: dict[str, Any] = field(default_factory=dict)
    png: bytes | None = None

    def to_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"task": self.task, "height": int(self.map.shape[0]),
                                  "width": int(self.map.shape[1]), **self.summary}
        if self.png is not None:
            record["png_base64"] = base64.b64encode(self.png).decode("ascii")
        return record


@dataclass(frozen=True)
class OutputInfo:
    """What a decoder may know about the model's outputs beyond their shapes (name, element type)."""

    name: str
    shape: tuple[Any, ...]
    dtype: np.dtype | None = None


@dataclass(frozen=True)
class DecoderContext:
    """What the model fitting knows besides output shapes: output names and types, the network input size
    (width, height) after preprocessing, and whether the model takes a size input (`orig_target_sizes`)."""

    outputs: tuple[OutputInfo, ...] = ()
    input_size: tuple[int, int] | None = None
    has_size_input: bool = False


class Decoder(ABC):
    """Turns one batch item of a model's outputs into detections (or classes, or a dense map)."""

    kind: ClassVar[str] = "detections"

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = list(labels)

    @abstractmethod
    def decode(self, outputs: Sequence[np.ndarray], index: int, transform: Transform) -> Any:
        """`outputs` in the model's output order, batch first; `index` picks the batch item."""

    def result_fields(self, outputs: Sequence[np.ndarray], index: int, transform: Transform) -> dict[str, Any]:
        """The `Result` fields for one frame: `kind` and what the decoder found."""
        found = self.decode(outputs, index, transform)
        if self.kind == "classifications":
            return {"kind": self.kind, "classifications": found}
        if self.kind == "dense":
            return {"kind": self.kind, "dense": found}
        return {"detections": found}

    def describe(self) -> str:
        """One line for logs and `edgeinfer check`: the decoder, its layout and why it was chosen."""
        return type(self).__name__

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


def check_outputs(outputs: Sequence[np.ndarray], count: int, what: str) -> None:
    if len(outputs) < count:
        raise DecodeError(f"{what} needs {count} model output(s), got {len(outputs)}")


def resolve_class_filter(classes: Sequence[int | str] | None, labels: Sequence[str]) -> np.ndarray | None:
    """`classes:` entries (ids or names) as sorted class ids; an unknown name is a DecodeError naming the
    known ones, so a typo is refused at start instead of silently dropping every detection."""
    if classes is None:
        return None
    ids: set[int] = set()
    index = {name: class_id for class_id, name in enumerate(labels)}
    for entry in classes:
        if isinstance(entry, str):
            if entry not in index:
                known = ", ".join(labels[:20]) + (", ..." if len(labels) > 20 else "") if labels else "none"
                raise DecodeError(f"classes: unknown class name {entry!r}; the model's names are: {known}")
            ids.add(index[entry])
        else:
            ids.add(int(entry))
    return np.asarray(sorted(ids), np.int64)


def validate_classes(value: list[int | str] | None) -> list[int | str] | None:
    """The schema check shared by every decoder's `classes:` key (ids >= 0 or non-empty names)."""
    if value is None:
        return None
    if not value:
        raise ValueError("classes is empty, which would drop every result; leave it out to keep all")
    negative = [entry for entry in value if isinstance(entry, int) and entry < 0]
    if negative:
        raise ValueError(f"class ids must be >= 0, got {negative}")
    if any(isinstance(entry, str) and not entry.strip() for entry in value):
        raise ValueError("class names must not be empty")
    return value
