"""The typed result of one processed frame, handed from a model worker to every output.

Outputs render it their own way: the JSON outputs (`to_record`) round numbers to keep lines short; a ROS
output reads the float boxes and the capture stamp as they are. `kind` says which field the decoder filled:
`detections` (boxes), `classifications` (top-k classes) or `dense` (a per-pixel map in source pixels with its
summary); the record carries that field under the same name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .decoders.base import Classification, DenseMap, Detection
from .frame import Frame

STATUSES = ("ok", "error", "invalid")


@dataclass(slots=True)
class Result:
    model: str
    source: str
    seq: int | None  # the frame's sequence number; None for a marker not tied to a frame (safe stop)
    stamp: float  # capture stamp, wall-clock seconds
    frame_id: str
    status: str  # ok | error | invalid
    detections: list[Detection] = field(default_factory=list)
    age_ms: float | None = None  # capture -> publish
    infer_ms: float | None = None
    error: str | None = None
    frame: Frame | None = None  # the image, for outputs that draw or forward it; never serialised
    kind: str = "detections"  # detections | classifications | dense
    classifications: list[Classification] = field(default_factory=list)
    dense: DenseMap | None = None

    @classmethod
    def for_frame(cls, model: str, frame: Frame, status: str, **fields: Any) -> Result:
        return cls(model=model, source=frame.source, seq=frame.seq, stamp=frame.wall, frame_id=frame.frame_id,
                   status=status, frame=frame, **fields)

    def to_record(self) -> dict[str, Any]:
        """The JSON record (JSONL, ZeroMQ): the same fields on every channel, numbers rounded."""
        record: dict[str, Any] = {
            "type": self.kind,
            "source": self.source,
            "frame": self.seq,
            "stamp": self.stamp,  # as the source gave it: a sender's stamp comes back exactly (JSON floats round-trip)
            "age_ms": None if self.age_ms is None else round(self.age_ms, 2),
            "model": self.model,
            "status": self.status,
        }
        if self.infer_ms is not None:
            record["infer_ms"] = round(self.infer_ms, 2)
        if self.kind == "classifications":
            record["classifications"] = [c.to_dict() for c in self.classifications]
        elif self.kind == "dense":
            record["dense"] = None if self.dense is None else self.dense.to_dict()
        else:
            record["detections"] = [d.to_dict() for d in self.detections]
        if self.error is not None:
            record["error"] = self.error
        return record
