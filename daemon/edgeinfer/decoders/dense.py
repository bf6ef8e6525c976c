"""Dense maps: one value (or class) per pixel -- semantic segmentation, saliency, depth.

The model's map covers the network input; the letterboxed content is cropped out of it and resized to the
source image, so pixel (x, y) of the published map is pixel (x, y) of the camera frame. Segmentation takes
the argmax over classes first (at the model's resolution, then nearest-neighbour resizing, so class ids are
never blended); saliency and depth are resized bilinearly.

Output shapes: [B, C, h, w] (C > 1: class scores; C == 1: one value per pixel) or [B, h, w] (integer: class
ids already; float: values). `task: auto` decides only from what cannot be confused: C > 1 or an integer map
is segmentation. A one-channel float map is saliency or depth, which share a shape: the config must say.

Published compactly: JSON outputs carry a summary (saliency/depth: the peak and the minimum with their
source-pixel locations and the mean; segmentation: each class's share of the image) and, with `png: true`,
the map as a base64 PNG (saliency 8-bit 0..1 -> 0..255, depth 16-bit scaled between the published min and
max, segmentation 8-bit class ids).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field

from edgeinfer.decoders.base import (
    DecodeError,
    Decoder,
    DecoderContext,
    OutputInfo,
    check_batch_item,
    check_outputs,
    normalize_shape,
)
from edgeinfer.decoders.labels import label_for
from edgeinfer.preprocess.cpu import Transform
from edgeinfer.results import DenseMap
from edgeinfer.schema import StrictModel

DenseTask = Literal["segmentation", "saliency", "depth"]


class DenseDecoderConfig(StrictModel):
    type: Literal["dense"]
    task: Literal["auto", "segmentation", "saliency", "depth"] = "auto"
    output: int = Field(0, ge=0, description="which model output holds the map")
    png: bool = Field(False, description="also publish the map as a base64 PNG (bigger records)")
    max_classes: int = Field(10, gt=0, description="segmentation: the classes with the largest shares published")


class DenseDecoder(Decoder):
    payload_type = DenseMap

    def __init__(self, config: DenseDecoderConfig, labels: Sequence[str],
                 output_shapes: Sequence[Sequence[Any]], context: DecoderContext | None = None) -> None:
        super().__init__(labels)
        self.config = config
        context = context or DecoderContext()
        if config.output >= len(output_shapes):
            raise DecodeError(f"output {config.output} does not exist: the model has {len(output_shapes)} "
                              "output(s)")
        info = (context.outputs[config.output] if len(context.outputs) > config.output
                else OutputInfo(f"output {config.output}", tuple(output_shapes[config.output])))
        shape = normalize_shape(info.shape)
        if len(shape) not in (3, 4):
            raise DecodeError(f"a dense map is [B, C, h, w] or [B, h, w], got {tuple(info.shape)}")
        self.channels = shape[1] if len(shape) == 4 else 0  # 0: no channel axis
        integer = info.dtype is not None and np.issubdtype(info.dtype, np.integer)
        self.task, self.reason = self._resolve_task(config.task, self.channels, integer, tuple(info.shape))
        self.input_size = context.input_size
        # more than 256 classes: 16-bit ids on every frame, so a consumer (ROS mono16) sees one encoding
        self.wide_ids = (self.channels or 0) > 256 or len(self.labels) > 256

    @staticmethod
    def _resolve_task(task: str, channels: int | None, integer: bool, shape: tuple) -> tuple[str, str]:
        if task != "auto":
            if task != "segmentation" and channels not in (None, 0, 1):
                raise DecodeError(f"task {task} expects one value per pixel ([B, 1, h, w] or [B, h, w]), got "
                                  f"{channels} channels in {shape}")
            return task, "set in the config"
        if channels is not None and channels > 1:
            return "segmentation", f"auto: {channels} class channels"
        if integer:
            return "segmentation", "auto: an integer map holds class ids"
        raise DecodeError(f"a one-value-per-pixel map {shape} may be saliency or depth (or a channel count "
                          "the model leaves open); set decoder.task to saliency, depth or segmentation")

    def describe(self) -> str:
        return f"dense task {self.task} ({self.reason}), output {self.config.output}, png {self.config.png}"

    def decode(self, outputs: Sequence[np.ndarray], index: int, transform: Transform) -> DenseMap:
        check_outputs(outputs, self.config.output + 1, "the dense decoder")
        output = outputs[self.config.output]
        check_batch_item(output, index)
        item = output[index]
        if item.ndim == 3 and self.task != "segmentation":
            if item.shape[0] != 1:
                raise DecodeError(f"{self.task} map: expected one channel, got {item.shape[0]}")
            item = item[0]
        elif item.ndim == 3:
            item = item.argmax(axis=0)  # class scores -> class ids at the model's resolution
        if item.ndim != 2 or item.shape[0] < 1 or item.shape[1] < 1:
            raise DecodeError(f"dense output: expected [B, C, h, w] or [B, h, w], got {output.shape}")
        source_map = self._to_source(item, transform)
        if self.task == "segmentation":
            summary, png = self._segmentation(source_map)
        else:
            summary, png = self._values(source_map)
        return DenseMap(self.task, source_map, summary, png)

    def _to_source(self, item: np.ndarray, transform: Transform) -> np.ndarray:
        """Crop the letterboxed content out of a map covering the network input, resize it to the source."""
        map_h, map_w = item.shape
        in_w, in_h = self.input_size or (map_w, map_h)
        fx, fy = map_w / in_w, map_h / in_h
        resized_w, resized_h = transform.resized_size
        x0 = min(max(int(round(transform.pad_x * fx)), 0), map_w - 1)
        y0 = min(max(int(round(transform.pad_y * fy)), 0), map_h - 1)
        x1 = min(max(int(round((transform.pad_x + resized_w) * fx)), x0 + 1), map_w)
        y1 = min(max(int(round((transform.pad_y + resized_h) * fy)), y0 + 1), map_h)
        content = item[y0:y1, x0:x1]
        if self.task == "segmentation":
            ids = content.astype(np.uint16 if self.wide_ids or content.max(initial=0) > 255 else np.uint8)
            return cv2.resize(ids, (transform.src_w, transform.src_h), interpolation=cv2.INTER_NEAREST)
        values = np.ascontiguousarray(content, np.float32)
        return cv2.resize(values, (transform.src_w, transform.src_h), interpolation=cv2.INTER_LINEAR)

    def _values(self, values: np.ndarray) -> tuple[dict[str, Any], bytes | None]:
        if not np.all(np.isfinite(values)):
            raise DecodeError(f"{self.task} map holds NaN or infinite values")
        peak_at = np.unravel_index(int(values.argmax()), values.shape)
        low_at = np.unravel_index(int(values.argmin()), values.shape)
        peak, low = float(values[peak_at]), float(values[low_at])
        summary = {
            "peak": round(peak, 4), "peak_xy": [int(peak_at[1]), int(peak_at[0])],
            "min": round(low, 4), "min_xy": [int(low_at[1]), int(low_at[0])],
            "mean": round(float(values.mean()), 4),
        }
        png = None
        if self.config.png:
            if self.task == "saliency":
                image = np.clip(values * 255.0 + 0.5, 0, 255).astype(np.uint8)
            else:  # depth: the full 16-bit range between the published min and peak
                span = peak - low
                scaled = (values - low) * (65535.0 / span) if span > 0 else np.zeros_like(values)
                image = np.clip(scaled + 0.5, 0, 65535).astype(np.uint16)
            png = _encode_png(image)
        return summary, png

    def _segmentation(self, ids: np.ndarray) -> tuple[dict[str, Any], bytes | None]:
        if ids.dtype == np.uint8:  # OpenCV's histogram is ~10x faster than bincount on a camera-sized map
            counts = cv2.calcHist([ids], [0], None, [256], [0, 256]).reshape(-1).astype(np.int64)
        else:
            counts = np.bincount(ids.reshape(-1))
        present = np.flatnonzero(counts)
        order = present[np.argsort(-counts[present], kind="stable")][: self.config.max_classes]
        total = float(ids.size)
        summary = {"classes": [{"class_id": int(c), "label": label_for(self.labels, int(c)),
                                "share": round(counts[c] / total, 4)} for c in order]}
        return summary, _encode_png(ids) if self.config.png else None


def _encode_png(image: np.ndarray) -> bytes:
    # level 1: the map is published per frame; a few percent bigger than the default and several times faster
    ok, encoded = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise DecodeError("PNG encoding of the map failed")
    return encoded.tobytes()

