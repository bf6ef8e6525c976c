"""What a model worker hands every output for one processed frame: a `Result` and its typed payload.

A decoder returns one `Payload` per frame: `Detections` (boxes), `Classifications` (top-k classes) or a
`DenseMap` (a per-pixel map in source pixels with its summary); later kinds (tracks, masks, keypoints) subclass
`Payload` — or `Detections`, so that every output that handles boxes handles them too. An error or invalid
result carries `Missing(kind)`: no payload, but the kind the model would have produced, so a record still says
what it would carry. Outputs dispatch on the payload's type in one place each; the JSON outputs render
`Result.to_record()`, which rounds numbers; a ROS output reads the float values as they are.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .frame import Frame

STATUSES = ("ok", "error", "invalid")


class Payload:
    """One frame's findings. `kind` is the record's `type` and the field its findings go under."""

    kind: ClassVar[str]

    def record_fields(self) -> dict[str, Any]:
        """The JSON fields of the findings (numbers rounded)."""
        raise NotImplementedError

    @classmethod
    def missing_fields(cls) -> dict[str, Any]:
        """The JSON fields of a record that carries no findings of this kind (an error, a safe stop)."""
        return {cls.kind: []}


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
class Detections(Payload):
    """Boxes in source pixels; a sequence of `Detection` (len, iteration, indexing)."""

    kind: ClassVar[str] = "detections"
    detections: list[Detection] = field(default_factory=list)

    def record_fields(self) -> dict[str, Any]:
        return {"detections": [d.to_dict() for d in self.detections]}

    def __len__(self) -> int:
        return len(self.detections)

    def __iter__(self) -> Iterator[Detection]:
        return iter(self.detections)

    def __getitem__(self, index: int) -> Detection:
        return self.detections[index]


@dataclass(slots=True)
class Classifications(Payload):
    kind: ClassVar[str] = "classifications"
    classifications: list[Classification] = field(default_factory=list)

    def record_fields(self) -> dict[str, Any]:
        return {"classifications": [c.to_dict() for c in self.classifications]}

    def __len__(self) -> int:
        return len(self.classifications)

    def __iter__(self) -> Iterator[Classification]:
        return iter(self.classifications)

    def __getitem__(self, index: int) -> Classification:
        return self.classifications[index]


@dataclass(slots=True)
class DenseMap(Payload):
    """A per-pixel map in source-image pixels (segmentation class ids, saliency, depth) and its summary.

    `summary` is what JSON outputs publish (the peak and its location, or the class shares); `png` is the map
    encoded as PNG when the decoder was asked for it (8-bit for saliency and class ids, 16-bit for depth).
    """

    kind: ClassVar[str] = "dense"
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

    def record_fields(self) -> dict[str, Any]:
        return {"dense": self.to_dict()}

    @classmethod
    def missing_fields(cls) -> dict[str, Any]:
        return {"dense": None}


@dataclass(slots=True)
class Missing(Payload):
    """No findings (an error, a safe stop), of the kind the model would have produced."""

    of: type[Payload] = Detections

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.of.kind

    def record_fields(self) -> dict[str, Any]:
        return self.of.missing_fields()


@dataclass(slots=True)
class Result:
    model: str
    source: str
    seq: int | None  # the frame's sequence number; None for a marker not tied to a frame (safe stop)
    stamp: float  # capture stamp, wall-clock seconds
    frame_id: str
    status: str  # ok | error | invalid
    payload: Payload = field(default_factory=Missing)
    age_ms: float | None = None  # capture -> publish
    infer_ms: float | None = None
    error: str | None = None
    frame: Frame | None = None  # the image, for outputs that draw or forward it; never serialised

    @classmethod
    def for_frame(cls, model: str, frame: Frame, status: str, payload: Payload, **fields: Any) -> Result:
        return cls(model=model, source=frame.source, seq=frame.seq, stamp=frame.wall, frame_id=frame.frame_id,
                   status=status, payload=payload, frame=frame, **fields)

    @property
    def kind(self) -> str:
        return self.payload.kind

    def to_record(self) -> dict[str, Any]:
        """The JSON record (JSONL, ZeroMQ): the same fields on every channel, numbers rounded."""
        record: dict[str, Any] = {
            "type": self.payload.kind,
            "source": self.source,
            "frame": self.seq,
            "stamp": self.stamp,  # as the source gave it: a sender's stamp comes back exactly (JSON floats round-trip)
            "age_ms": None if self.age_ms is None else round(self.age_ms, 2),
            "model": self.model,
            "status": self.status,
        }
        if self.infer_ms is not None:
            record["infer_ms"] = round(self.infer_ms, 2)
        record.update(self.payload.record_fields())
        if self.error is not None:
            record["error"] = self.error
        return record
