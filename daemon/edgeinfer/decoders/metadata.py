"""What exporters write into a model file, read so that names, input size and decoder need no config.

ONNX files carry string key/value pairs (`metadata_props`; ONNX Runtime shows them as the custom metadata
map). Keys understood:
  Ultralytics (`yolo export format=onnx`): `names` (a Python dict literal {0: 'person', ...}), `imgsz`
    ([h, w]), `stride`, `task` (detect, classify, segment, pose, obb), `description` (names the model family,
    e.g. "Ultralytics YOLOv8n model ..." or "... rtdetr-l ...").
  PaddleOCR / PaddleClas exports: `character` (class names, one per line).
Everything read is reported with the key it came from, so `edgeinfer check` can say where a value came from.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass, field
from typing import Any

# Ultralytics tasks this daemon decodes from the model alone; obb (rotated boxes) needs a decoder it does not
# have, and decoding only its boxes would publish garbage.
DECODED_TASKS = ("detect", "classify", "segment", "pose")


class MetadataError(ValueError):
    """Metadata that is present but cannot be read (a malformed `names` entry, ...)."""


@dataclass(frozen=True)
class ModelMetadata:
    names: list[str] | None = None
    imgsz: tuple[int, int] | None = None  # (height, width)
    stride: int | None = None
    task: str | None = None
    kpt_shape: tuple[int, int] | None = None  # pose models: (keypoints, values per keypoint)
    description: str = ""
    read: dict[str, str] = field(default_factory=dict)  # what -> the key it came from

    @property
    def is_transformer_detector(self) -> bool:
        """Ultralytics RT-DETR exports say so only in their description (their task is `detect`)."""
        return "detr" in self.description.lower()


def parse_metadata(props: dict[str, str]) -> ModelMetadata:
    """Read the keys above from a metadata map; absent keys stay None, malformed ones raise MetadataError."""
    read: dict[str, str] = {}
    names = None
    if "names" in props:
        names = _parse_names(props["names"])
        read["names"] = "names"
    elif "character" in props:
        names = [line.strip() for line in props["character"].splitlines() if line.strip()]
        read["names"] = "character"
    imgsz = None
    if "imgsz" in props:
        imgsz = _parse_imgsz(props["imgsz"])
        read["imgsz"] = "imgsz"
    stride = None
    if "stride" in props:
        try:
            stride = int(props["stride"])
        except ValueError:
            raise MetadataError(f"metadata stride is not an integer: {props['stride']!r}") from None
        read["stride"] = "stride"
    task = props.get("task") or None
    if task:
        read["task"] = "task"
    kpt_shape = None
    if "kpt_shape" in props:
        value = _literal(props["kpt_shape"], "kpt_shape")
        if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value)
                and value[0] > 0 and value[1] in (2, 3)):
            raise MetadataError(f"metadata kpt_shape must be [K, 2 or 3], got {props['kpt_shape'][:80]!r}")
        kpt_shape = (int(value[0]), int(value[1]))
        read["kpt_shape"] = "kpt_shape"
    return ModelMetadata(names=names, imgsz=imgsz, stride=stride, task=task, kpt_shape=kpt_shape,
                         description=props.get("description", ""), read=read)


def _literal(text: str, key: str) -> Any:
    try:
        return ast.literal_eval(text)  # literals only: never evaluates code from a model file
    except (ValueError, SyntaxError):
        try:
            return json.loads(text)
        except ValueError:
            raise MetadataError(f"metadata {key} is not a Python or JSON literal: {text[:80]!r}") from None


def _parse_names(text: str) -> list[str]:
    value = _literal(text, "names")
    if isinstance(value, dict):
        try:
            by_id = {int(key): str(name) for key, name in value.items()}
        except (TypeError, ValueError):
            raise MetadataError(f"metadata names has non-integer class ids: {text[:80]!r}") from None
        if not by_id or min(by_id) < 0:
            raise MetadataError(f"metadata names must map class ids >= 0 to names: {text[:80]!r}")
        return [by_id.get(class_id, f"class_{class_id}") for class_id in range(max(by_id) + 1)]
    if isinstance(value, (list, tuple)) and value:
        return [str(name) for name in value]
    raise MetadataError(f"metadata names is neither a dict nor a list of names: {text[:80]!r}")


def _parse_imgsz(text: str) -> tuple[int, int]:
    value = _literal(text, "imgsz")
    if isinstance(value, int):
        value = [value, value]
    if (isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value)):
        return int(value[0]), int(value[1])
    raise MetadataError(f"metadata imgsz must be [height, width] or one size, got {text[:80]!r}")
