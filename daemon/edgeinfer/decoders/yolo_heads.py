"""Ultralytics segment and pose heads (YOLOv8 / YOLO11 exports): boxes plus instance masks or keypoints.

Layouts (B = batch, N = candidates, nc = classes; boxes and keypoints in network-input pixels):
  segment  output A [B, 4 + nc + nm, N]: cx, cy, w, h, class scores, nm mask coefficients (32); or YOLOv5-seg's
                    [B, N, 5 + nc + nm] with objectness (score = objectness x class probability)
           output B [B, nm, mh, mw]:    mask prototypes at 1/4 of the input size (160 x 160 for 640)
  pose     output   [B, 4 + nc + K * d, N]: cx, cy, w, h, class scores, K keypoints of d values (x, y[, conf]);
           the export already applied the sigmoid to the confidences (17 x 3 for COCO persons, nc = 1)
The outputs are told apart by rank, so their order in the file does not matter. nc comes from the shapes (seg:
the prototypes give nm) or, for pose, from `keypoints` ([K, d], default: the model's metadata kpt_shape, else
[17, 3]). OBB heads (rotated boxes) are not decoded (see docs/models.md).

Masks follow Ultralytics' `process_mask`: sigmoid(coefficients @ prototypes), resampled bilinearly, kept inside
the box, > mask_threshold. Here the resampling goes straight from prototype pixels to source pixels, through
the letterbox (or stretch) transform, one warp per instance over its box only, so no full-size mask is made.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import cv2
import numpy as np
from pydantic import Field, field_validator

from edgeinfer.decoders.base import (
    DecodeError,
    Decoder,
    DecoderContext,
    check_batch_item,
    normalize_shape,
    resolve_class_filter,
    validate_classes,
)
from edgeinfer.decoders.labels import label_for
from edgeinfer.decoders.nms import nms
from edgeinfer.decoders.yolo import xywh_to_xyxy
from edgeinfer.instances import Instance, InstanceMask, Keypoints, Masks
from edgeinfer.preprocess.cpu import Transform
from edgeinfer.schema import StrictModel


class _HeadConfig(StrictModel):
    conf_threshold: float = Field(0.25, ge=0.0, le=1.0)
    iou_threshold: float = Field(0.45, ge=0.0, le=1.0)
    max_detections: int = Field(300, gt=0)
    class_agnostic: bool = False
    classes: list[int | str] | None = None

    @field_validator("classes")
    @classmethod
    def _classes_valid(cls, value: list[int | str] | None) -> list[int | str] | None:
        return validate_classes(value)


class YoloSegmentDecoderConfig(_HeadConfig):
    type: Literal["yolo-segment"] = "yolo-segment"
    layout: Literal["auto", "v8", "v5"] = Field("auto", description="v8: [B, 4 + nc + nm, N] (YOLOv8/YOLO11); "
                                                "v5: [B, N, 5 + nc + nm] with objectness (YOLOv5-seg); auto: the "
                                                "one whose class count matches the labels, else the longer axis "
                                                "is N")
    mask_threshold: float = Field(0.5, gt=0.0, lt=1.0, description="a pixel is in the mask when sigmoid > this")


class YoloPoseDecoderConfig(_HeadConfig):
    type: Literal["yolo-pose"] = "yolo-pose"
    keypoints: tuple[int, int] | None = Field(
        None, description="[K, d]: K keypoints of d = 2 (x, y) or 3 (x, y, conf) values; default: the model's "
        "metadata kpt_shape, else [17, 3]")

    @field_validator("keypoints")
    @classmethod
    def _shape_valid(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and (value[0] < 1 or value[1] not in (2, 3)):
            raise ValueError(f"keypoints must be [K >= 1, 2 or 3], got {list(value)}")
        return value


class _HeadDecoder(Decoder):
    """What both heads share: the v8 candidate pass (best class score >= threshold), class filter and NMS."""

    config: _HeadConfig
    extra: int  # channels after the class scores

    def _setup(self, config: _HeadConfig, head_shape: Sequence[Any], layout: str = "v8") -> None:
        self.config = config
        self.head_shape = normalize_shape(head_shape)
        if len(self.head_shape) != 3:
            raise DecodeError(f"{self.what} head output must be 3-D [B, 4 + nc + {self.extra_name}, N], got shape "
                              f"{tuple(head_shape)}")
        _, a, b = self.head_shape
        if layout == "auto":
            nc = len(self.labels)
            if nc and a == 4 + nc + self.extra:
                layout = "v8"
            elif nc and b == 5 + nc + self.extra:
                layout = "v5"
            else:  # N (thousands of candidates, or dynamic) is the longer axis
                layout = "v5" if a is None or (b is not None and a > b) else "v8"
        self.layout = layout
        self.box_channels = 5 if layout == "v5" else 4  # v5 adds objectness
        channels = b if layout == "v5" else a
        if channels is None or channels < self.box_channels + 1 + self.extra:
            where = "dim 2" if layout == "v5" else "dim 1"
            raise DecodeError(f"{self.what} head output {tuple(head_shape)} ({layout}): needs "
                              f"{self.box_channels} + nc + {self.extra} ({self.extra_name}) >= "
                              f"{self.box_channels + 1 + self.extra} channels in {where}")
        self.num_classes = channels - self.box_channels - self.extra
        self._classes = resolve_class_filter(config.classes, self.labels)

    what = "YOLO"
    extra_name = ""

    def _candidates(self, prediction: np.ndarray):
        """(boxes [n, 4] input pixels, scores, class ids, extra rows [n, extra]) after threshold, filter, NMS.
        `prediction` is one batch item: [C, N] (v8) or [N, C] (v5)."""
        if self.layout == "v5":
            prediction = prediction.T  # a view: [C, N] like v8
        first = self.box_channels
        expected = first + self.num_classes + self.extra
        if prediction.shape[0] != expected:
            raise DecodeError(f"{self.what} head output: expected {expected} channels, got {prediction.shape[0]}")
        if self.layout == "v5":  # score = objectness x class probability <= objectness: a cheap first cut
            columns = np.flatnonzero(prediction[4] >= self.config.conf_threshold)
            class_scores = prediction[first:first + self.num_classes, columns] * prediction[4, columns]
        else:
            columns = np.arange(prediction.shape[1])
            class_scores = prediction[first:first + self.num_classes]
        best = class_scores.max(axis=0) if columns.size else np.zeros(0, prediction.dtype)
        kept = np.flatnonzero(best >= self.config.conf_threshold)
        class_ids = class_scores[:, kept].argmax(axis=0)
        scores = best[kept].astype(np.float64)
        columns = columns[kept]
        if self._classes is not None:
            wanted = np.isin(class_ids, self._classes)
            columns, class_ids, scores = columns[wanted], class_ids[wanted], scores[wanted]
        boxes = xywh_to_xyxy(*prediction[:4, columns].astype(np.float64))  # float64, as the heads always did
        keep = nms(boxes, scores, class_ids, self.config.iou_threshold, class_agnostic=self.config.class_agnostic,
                   max_output=self.config.max_detections)
        extra = prediction[first + self.num_classes:, columns[keep]].T
        return boxes[keep], scores[keep], class_ids[keep], extra

    def _instances(self, boxes_src: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, **per_instance: list
                   ) -> list[Instance]:
        out = []
        for i, (class_id, score, bbox) in enumerate(zip(class_ids.tolist(), scores.tolist(), boxes_src.tolist(),
                                                        strict=True)):
            fields = {name: values[i] for name, values in per_instance.items()}
            out.append(Instance(class_id, label_for(self.labels, class_id), score, tuple(bbox), **fields))
        return out


class YoloSegmentDecoder(_HeadDecoder):
    payload_type = Masks
    what = "YOLO segment"
    extra_name = "mask coefficients"

    def __init__(self, config: YoloSegmentDecoderConfig, labels: Sequence[str],
                 output_shapes: Sequence[Sequence[Any]], context: DecoderContext | None = None) -> None:
        super().__init__(labels)
        ranks = [len(shape) for shape in output_shapes]
        if sorted(ranks)[:2] != [3, 4] or ranks.count(3) != 1 or ranks.count(4) != 1:
            raise DecodeError(f"a YOLO segment model has two outputs, [B, 4 + nc + nm, N] and prototypes "
                              f"[B, nm, mh, mw]; got shapes {[tuple(s) for s in output_shapes]}")
        self.head_index, self.proto_index = ranks.index(3), ranks.index(4)
        proto_shape = normalize_shape(output_shapes[self.proto_index])
        if proto_shape[1] is None:
            raise DecodeError(f"prototype output {tuple(output_shapes[self.proto_index])}: the mask count (dim 1) "
                              "must be fixed")
        self.extra = proto_shape[1]
        self._setup(config, output_shapes[self.head_index], config.layout)
        self.mask_threshold = config.mask_threshold
        # (width, height) of the network input; without it, Ultralytics' ratio: prototypes are 1/4 of the input
        self.input_size = context.input_size if context is not None else None

    def describe(self) -> str:
        return f"yolo segment layout {self.layout} ({self.num_classes} classes, {self.extra} mask prototypes)"

    def decode(self, outputs: Sequence[np.ndarray], index: int, transform: Transform) -> Masks:
        if len(outputs) < 2:
            raise DecodeError(f"the YOLO segment decoder needs 2 outputs, got {len(outputs)}")
        head, protos = outputs[self.head_index], outputs[self.proto_index]
        if head.ndim != 3 or protos.ndim != 4 or protos.shape[1] != self.extra:
            raise DecodeError(f"YOLO segment outputs: expected [B, C, N] and [B, {self.extra}, mh, mw], got "
                              f"{tuple(head.shape)} and {tuple(protos.shape)}")
        check_batch_item(head, index)
        check_batch_item(protos, index, "the prototypes")
        boxes, scores, class_ids, coefficients = self._candidates(head[index])
        boxes_src = transform.to_source(boxes)
        protos_item = protos[index]
        masks = [self._mask(c.astype(np.float32), protos_item, box, transform)
                 for c, box in zip(coefficients, boxes_src, strict=True)]
        return Masks(self._instances(boxes_src, scores, class_ids, mask=masks))

    def _mask(self, coefficients: np.ndarray, protos: np.ndarray, box: np.ndarray,
              transform: Transform) -> InstanceMask:
        """One instance's mask over its (source-pixel) box: sigmoid(coefficients @ prototypes) on the prototype
        pixels under the box only (plus one for the interpolation), resampled into the box's source pixels."""
        _, mh, mw = protos.shape
        x0, y0 = int(np.floor(box[0])), int(np.floor(box[1]))
        x1, y1 = int(np.ceil(box[2])), int(np.ceil(box[3]))
        width, height = max(0, x1 - x0), max(0, y1 - y0)
        if width == 0 or height == 0:
            return InstanceMask(x0, y0, np.zeros((height, width), bool), transform.src_h, transform.src_w)
        in_w, in_h = self.input_size or (mw * 4, mh * 4)
        sx, sy = mw / in_w, mh / in_h  # prototype pixels per input pixel
        # source pixel centre (x0 + u + 0.5) -> input pixel centre -> prototype pixel index (centre at +0.5)
        tx = ((x0 + 0.5) * transform.scale_x + transform.pad_x) * sx - 0.5
        ty = ((y0 + 0.5) * transform.scale_y + transform.pad_y) * sy - 0.5
        px0 = max(0, int(np.floor(tx)) - 1)
        py0 = max(0, int(np.floor(ty)) - 1)
        px1 = min(mw, int(np.ceil(tx + width * transform.scale_x * sx)) + 2)
        py1 = min(mh, int(np.ceil(ty + height * transform.scale_y * sy)) + 2)
        # einsum, not BLAS: on a loaded 2-core box a BLAS call waits milliseconds for its threads
        logits = np.einsum("c,chw->hw", coefficients, protos[:, py0:py1, px0:px1].astype(np.float32, copy=False))
        probability = 1.0 / (1.0 + np.exp(-logits))
        warp = np.array([[transform.scale_x * sx, 0.0, tx - px0], [0.0, transform.scale_y * sy, ty - py0]])
        sampled = cv2.warpAffine(probability, warp, (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                 borderMode=cv2.BORDER_REPLICATE)
        crop = sampled > self.mask_threshold
        # Ultralytics keeps only the pixels inside the box: clear the fractional edges of the integer crop
        u = np.arange(width) + x0 + 0.5
        v = np.arange(height) + y0 + 0.5
        crop &= ((v >= box[1]) & (v <= box[3]))[:, None] & ((u >= box[0]) & (u <= box[2]))[None, :]
        return InstanceMask(x0, y0, crop, transform.src_h, transform.src_w)


class YoloPoseDecoder(_HeadDecoder):
    payload_type = Keypoints
    what = "YOLO pose"
    extra_name = "keypoints"

    def __init__(self, config: YoloPoseDecoderConfig, labels: Sequence[str],
                 output_shapes: Sequence[Sequence[Any]], context: DecoderContext | None = None) -> None:
        super().__init__(labels)
        if len(output_shapes) != 1:
            raise DecodeError(f"a YOLO pose model has one output [B, 4 + nc + K * d, N]; got "
                              f"{len(output_shapes)}: {[tuple(s) for s in output_shapes]}")
        self.kpt_shape = config.keypoints or (17, 3)  # the fitting fills in the metadata's kpt_shape
        self.extra = self.kpt_shape[0] * self.kpt_shape[1]
        self._setup(config, output_shapes[0])

    def describe(self) -> str:
        classes = f"{self.num_classes} class" + ("es" if self.num_classes != 1 else "")
        return f"yolo pose ({classes}, {self.kpt_shape[0]} keypoints x {self.kpt_shape[1]})"

    def decode(self, outputs: Sequence[np.ndarray], index: int, transform: Transform) -> Keypoints:
        if not outputs or outputs[0].ndim != 3:
            raise DecodeError("the YOLO pose decoder needs one 3-D output")
        check_batch_item(outputs[0], index)
        boxes, scores, class_ids, raw = self._candidates(outputs[0][index])
        count, (k, d) = raw.shape[0], self.kpt_shape
        raw = raw.reshape(count, k, d).astype(np.float64)
        keypoints = np.ones((count, k, 3))
        keypoints[:, :, :d] = raw  # no confidence column (d = 2): every keypoint counts as seen
        keypoints[:, :, 0] = np.clip((keypoints[:, :, 0] - transform.pad_x) / transform.scale_x, 0, transform.src_w)
        keypoints[:, :, 1] = np.clip((keypoints[:, :, 1] - transform.pad_y) / transform.scale_y, 0, transform.src_h)
        return Keypoints(self._instances(transform.to_source(boxes), scores, class_ids, keypoints=list(keypoints)))
