"""Detections that carry more than a box: a track id (tracking), an instance mask (segment heads), keypoints
(pose heads). `Instance` subclasses `Detection`, so every output that handles boxes handles these too; the
JSON record adds the fields that are set:

  track_id      int, stable per (source, model) while the object is followed (tracking on)
  track_age     frames since the track started (1 on its first frame)
  mask          {"size": [H, W], "counts": str}: COCO compressed RLE over the whole source image
  keypoints     [[x, y, confidence], ...] in source pixels, in the model's keypoint order (COCO's 17 for
                Ultralytics pose models)

Payloads: `Masks` (segment models) and `Keypoints` (pose models) are `Detections` whose items carry a mask or
keypoints: the record's `type` stays "detections" (consumers of boxes keep working), and outputs that know
them add what a box cannot carry (ROS: an instance-id image, a keypoints message). Tracking keeps a payload's
type and sets `track_id` on its items.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeinfer import rle
from edgeinfer.results import Detection, Detections


@dataclass(slots=True)
class InstanceMask:
    """A binary mask in source pixels, kept as the crop that holds it: rows y0.., columns x0.. of a
    height x width image (a full-size mask per instance would cost H x W bytes each)."""

    x0: int
    y0: int
    crop: np.ndarray  # [h, w] bool
    height: int  # the source image
    width: int

    def full(self) -> np.ndarray:
        out = np.zeros((self.height, self.width), bool)
        h, w = self.crop.shape
        out[self.y0:self.y0 + h, self.x0:self.x0 + w] = self.crop
        return out

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.crop))

    def counts(self) -> list[int]:
        """COCO counts of the full-size mask, from the crop: the columns left and right of it are one run of
        zeros each, so only the crop's columns (padded to full height) are scanned."""
        h, w = self.crop.shape
        column_band = np.zeros((self.height, w), bool)
        column_band[self.y0:self.y0 + h] = self.crop
        counts = rle.runs(column_band.ravel(order="F")) if w else [0]
        counts[0] += self.height * self.x0
        right = self.height * (self.width - self.x0 - w)
        if len(counts) % 2:  # ends in a run of zeros
            counts[-1] += right
        elif right:
            counts.append(right)
        return counts

    def to_rle(self) -> dict[str, Any]:
        return {"size": [self.height, self.width], "counts": rle.counts_to_string(self.counts())}


@dataclass(slots=True)
class Masks(Detections):
    """Detections of a segment model: each an `Instance` with its `mask`."""


@dataclass(slots=True)
class Keypoints(Detections):
    """Detections of a pose model: each an `Instance` with its `keypoints`."""


@dataclass(slots=True)
class Instance(Detection):
    track_id: int | None = None
    track_age: int | None = None
    mask: InstanceMask | None = None
    keypoints: np.ndarray | None = None  # [K, 3] float: x, y (source pixels), confidence

    @classmethod
    def of(cls, detection: Detection, **fields: Any) -> Instance:
        """`detection` with `fields` set (an Instance keeps the fields it had)."""
        if isinstance(detection, Instance):
            base = {"track_id": detection.track_id, "track_age": detection.track_age, "mask": detection.mask,
                    "keypoints": detection.keypoints}
        else:
            base = {}
        return cls(detection.class_id, detection.label, detection.score, detection.bbox, **(base | fields))

    def to_dict(self) -> dict[str, Any]:
        record = Detection.to_dict(self)
        if self.track_id is not None:
            record["track_id"] = int(self.track_id)
            record["track_age"] = int(self.track_age or 0)
        if self.mask is not None:
            record["mask"] = self.mask.to_rle()
        if self.keypoints is not None:
            record["keypoints"] = [[round(float(x), 1), round(float(y), 1), round(float(c), 3)]
                                   for x, y, c in self.keypoints.tolist()]
        return record


def instance_image(detections: list[Detection], height: int, width: int) -> np.ndarray:
    """The instance-id image of one result in source pixels: 0 where no mask is, i + 1 where detections[i]'s
    mask is (uint8 up to 255 instances, else uint16). Where masks overlap, the earlier detection (the higher
    score: decoders rank them) wins, so it is painted last."""
    dtype = np.uint8 if len(detections) <= 255 else np.uint16
    image = np.zeros((height, width), dtype)
    for index in range(min(len(detections), 65535) - 1, -1, -1):
        mask = getattr(detections[index], "mask", None)
        if mask is None:
            continue
        h, w = mask.crop.shape
        region = image[mask.y0:mask.y0 + h, mask.x0:mask.x0 + w]
        region[mask.crop[:region.shape[0], :region.shape[1]]] = index + 1
    return image


def detection_id(detection: Detection, index: int) -> str:
    """vision_msgs/Detection2D.id of detections[index]: its track id with tracking on; else, for an instance
    with a mask or keypoints, its 1-based position (the value of its pixels in the instance image); else ""."""
    track_id = getattr(detection, "track_id", None)
    if track_id is not None:
        return str(track_id)
    if getattr(detection, "mask", None) is not None or getattr(detection, "keypoints", None) is not None:
        return str(index + 1)
    return ""
