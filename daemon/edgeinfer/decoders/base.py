"""The decoder interface: raw model outputs of one batch item -> a typed payload (detections, classes or a
dense map, in source-image terms).

A decoder declares what it produces with `payload_type` (a `results.Payload` subclass) and returns one from
`decode` for each frame.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from edgeinfer.decoders.labels import label_for
from edgeinfer.preprocess.cpu import Transform
from edgeinfer.results import Detection, Detections, Payload


class DecodeError(ValueError):
    """Model outputs that do not have the shape the decoder expects."""








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
    """Turns one batch item of a model's outputs into a payload: detections, classes, or a dense map."""

    payload_type: ClassVar[type[Payload]] = Detections

    def __init__(self, labels: Sequence[str]) -> None:
        self.labels = list(labels)

    @abstractmethod
    def decode(self, outputs: Sequence[np.ndarray], index: int, transform: Transform) -> Payload:
        """`outputs` in the model's output order, batch first; `index` picks the batch item."""

    def describe(self) -> str:
        """One line for logs and `edgeinfer check`: the decoder, its layout and why it was chosen."""
        return type(self).__name__

    def make_detections(
        self, class_ids: np.ndarray, scores: np.ndarray, boxes: np.ndarray
    ) -> Detections:
        """Detections from parallel arrays (boxes already in source pixels)."""
        return Detections([
            Detection(class_id, label_for(self.labels, class_id), score, (x1, y1, x2, y2))
            for class_id, score, (x1, y1, x2, y2) in zip(
                class_ids.tolist(), scores.tolist(), boxes.tolist(), strict=True
            )
        ])


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
