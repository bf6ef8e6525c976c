"""YOLO detection heads: v5 (also v3/v7), v8 (also v11) and v10 (end-to-end), decoded from the first output.

Layouts (B = batch, N = candidate boxes, nc = classes; boxes in network-input pixels):
  v5   [B, N, 5 + nc]  cx, cy, w, h, objectness, class probabilities; score = objectness * class prob
  v8   [B, 4 + nc, N]  cx, cy, w, h, class scores (no objectness)
  v10  [B, N, 6]       x1, y1, x2, y2, score, class id; already suppressed, so no NMS

`layout: auto` decides from the declared shape [B, a, b] of output 0:
  1. with labels (nc = len(labels)), the layouts whose class count matches: v5 if b == 5 + nc, v8 if
     a == 4 + nc, v10 if b == 6 (it carries no class count). Exactly one -> that layout.
  2. the shape alone: a layout *fits* when  v5: b >= 6 and a > b  |  v8: a >= 5 and b > a  |  v10: b == 6
     (a dynamic dim counts as larger, since only the box count is ever dynamic). If step 1 matched several
     layouts, the one of those that fits is taken; if step 1 matched none (the labels list may be shorter
     than the model's classes) or there are no labels, the only fitting layout is taken.
  3. anything else (no candidate, or still several) is a DecodeError asking for an explicit `layout`; so is
     [B, Q, 4 + nc] with nc labels, the RT-DETR layout, which v5 would otherwise fit and misread.
E.g. [1, 2535, 85] -> v5, [1, 84, 8400] -> v8, [1, 300, 6] with 80 labels -> v10; [1, 300, 6] without labels
or with one label is ambiguous (v10 or a one-class v5), and so is [1, 25200, 6] with one label.

Per frame: a cheap threshold over all N candidates first (objectness for v5, since score <= objectness;
the best class score for v8), then class choice, class filter and NMS on the survivors only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

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
from edgeinfer.decoders.fit import box_range_problem, score_range_problem
from edgeinfer.decoders.nms import nms
from edgeinfer.preprocess.cpu import Transform
from edgeinfer.results import Detections
from edgeinfer.schema import StrictModel

# Like YOLOv5's max_nms: with a very low threshold keep only the best candidates, which bounds NMS time.
_MAX_NMS_CANDIDATES = 30000

Layout = Literal["v5", "v8", "v10"]
_BOOL = np.dtype(bool)


class YoloDecoderConfig(StrictModel):
    type: Literal["yolo"] = "yolo"
    layout: Literal["auto", "v5", "v8", "v10"] = "auto"
    conf_threshold: float = Field(0.25, ge=0.0, le=1.0)  # kept when score >= conf_threshold
    iou_threshold: float = Field(0.45, ge=0.0, le=1.0)  # suppressed when IoU > iou_threshold
    max_detections: int = Field(300, gt=0)
    class_agnostic: bool = False
    classes: list[int | str] | None = None  # keep only these class ids or names; None keeps all

    @field_validator("classes")
    @classmethod
    def _classes_valid(cls, value: list[int | str] | None) -> list[int | str] | None:
        return validate_classes(value)


def _fits(layout: str, a: int | None, b: int | None) -> bool:
    if layout == "v5":
        return b is not None and b >= 6 and (a is None or a > b)
    if layout == "v8":
        return a is not None and a >= 5 and (b is None or b > a)
    return b == 6


def _matches_class_count(layout: str, a: int | None, b: int | None, num_classes: int) -> bool:
    if layout == "v5":
        return b == 5 + num_classes
    if layout == "v8":
        return a == 4 + num_classes
    return b == 6


_LAYOUTS = ("v5", "v8", "v10")
_EXPECTED = {
    "v5": "[B, N, 5 + nc] with 5 + nc >= 6",
    "v8": "[B, 4 + nc, N] with 4 + nc >= 5",
    "v10": "[B, N, 6]",
}


def _feature_ok(layout: str, a: int | None, b: int | None) -> bool:
    return {"v5": b is not None and b >= 6, "v8": a is not None and a >= 5, "v10": b == 6}[layout]


# Transformer heads (RT-DETR, DETR) emit a few hundred queries as [B, N, 4 + nc]: from the shape alone that
# reads as a v5 head with one class fewer. YOLO grid heads have thousands of rows (2535 for YOLOv3-tiny at
# 416, 6300 for YOLOv5n at 320), so `auto` takes v5 from the shape alone only above this many rows.
_MAX_QUERY_ROWS = 1000


def resolve_layout(requested: str, shape: Sequence[Any], num_labels: int) -> Layout:
    """The YOLO layout for a declared output shape (see the module docstring for the `auto` rule)."""
    dims = normalize_shape(shape)
    if len(dims) != 3:
        raise DecodeError(f"YOLO output must be 3-D [batch, a, b], got shape {tuple(shape)}")
    _, a, b = dims
    if requested != "auto":
        if not _feature_ok(requested, a, b):
            raise DecodeError(f"layout {requested} expects {_EXPECTED[requested]}, got shape {tuple(shape)}")
        return requested  # type: ignore[return-value]
    fits = [layout for layout in _LAYOUTS if _fits(layout, a, b)]
    matching = [
        layout for layout in _LAYOUTS if num_labels > 0 and _matches_class_count(layout, a, b, num_labels)
    ]
    if len(matching) == 1:
        return matching[0]  # type: ignore[return-value]
    if not matching and "v5" in fits and "v10" not in fits:
        detr = num_labels > 0 and b == 4 + num_labels
        if detr or (num_labels == 0 and a is not None and a <= _MAX_QUERY_ROWS):
            what = (f"has 4 + {num_labels} columns for {num_labels} labels" if detr
                    else f"has {a} rows, as many as a transformer's queries")
            raise DecodeError(
                f"cannot pick a YOLO layout: output shape {tuple(shape)} {what}: it may be [B, N, 4 + nc] boxes "
                f"and class scores without objectness (RT-DETR, DETR), which no yolo layout decodes (set "
                f"decoder.type: detr), or a v5 head with {b - 5} classes; if it is the latter, set decoder.layout: v5")
    candidates = [layout for layout in matching if layout in fits] if matching else fits
    if len(candidates) == 1:
        return candidates[0]  # type: ignore[return-value]
    if candidates:
        what = f"fits layouts {candidates}" + (f" with {num_labels} labels" if matching else "")
    else:
        what = "fits none of " + ", ".join(f"{name} {_EXPECTED[name]}" for name in _LAYOUTS)
    raise DecodeError(f"cannot pick a YOLO layout: output shape {tuple(shape)} {what}; set decoder.layout")


class YoloDecoder(Decoder):
    """Decodes output 0 of a YOLO model. Keeps scratch arrays between calls: one instance per thread."""

    def __init__(
        self, config: YoloDecoderConfig, labels: Sequence[str], output_shapes: Sequence[Sequence[Any]],
        context: DecoderContext | None = None,  # the YOLO layouts are told apart by output 0's shape alone
    ) -> None:
        super().__init__(labels)
        if not output_shapes:
            raise DecodeError("the YOLO decoder needs at least one model output, got none")
        self.config = config
        self.declared_shape = normalize_shape(output_shapes[0])
        self.layout: Layout = resolve_layout(config.layout, output_shapes[0], len(self.labels))
        self.reason = ("set in the config" if config.layout != "auto" else
                       f"auto: output shape {tuple(output_shapes[0])} with {len(self.labels)} label(s)")
        self._classes = resolve_class_filter(config.classes, self.labels)
        self._scratch: dict[tuple[str, int, np.dtype], np.ndarray] = {}

    def describe(self) -> str:
        return f"yolo layout {self.layout} ({self.reason})"

    @property
    def num_classes(self) -> int | None:
        """The model's class count when the layout carries it (v10 does not)."""
        _, a, b = self.declared_shape
        if self.layout == "v5":
            return None if b is None else b - 5
        if self.layout == "v8":
            return None if a is None else a - 4
        return None

    def output_problems(self, outputs: Sequence[np.ndarray], input_hw: tuple[int, int]) -> list[str]:
        """What in real outputs (one inference) this layout cannot produce; names the config key and the
        layouts that would fit instead."""
        output = outputs[0] if outputs else None
        if not isinstance(output, np.ndarray) or output.ndim != 3 or output.shape[0] < 1:
            return []  # the shape checks of `decode` report these
        threshold = max(self.config.conf_threshold, 0.1)
        problems = _raw_problems(self.layout, output[0], input_hw, threshold)
        if not problems:
            return []
        _, a, b = output.shape
        fitting = [alt for alt in _LAYOUTS if alt != self.layout and _feature_ok(alt, a, b)
                   and not _raw_problems(alt, output[0], input_hw, threshold)]
        hint = (f"layout {' or '.join(fitting)} fits them" if fitting
                else "no yolo layout fits them (is it a YOLO detection model?)")
        return [f"decoder.layout: {self.layout} does not fit the model's outputs on a test image: "
                f"{'; '.join(problems)}; {hint}"]

    def decode(self, outputs: Sequence[np.ndarray], index: int, transform: Transform) -> Detections:
        output = self._checked_output(outputs, index)
        if self.layout == "v5":
            found = self._candidates_v5(output[index])
        elif self.layout == "v8":
            found = self._candidates_v8(output[index])
        else:
            found = self._candidates_v10(output[index])
        if found is None:
            return Detections()
        boxes, scores, class_ids = found
        if self._classes is not None:
            wanted = np.isin(class_ids, self._classes)
            boxes, scores, class_ids = boxes[wanted], scores[wanted], class_ids[wanted]
        if scores.size > _MAX_NMS_CANDIDATES:
            best = np.argpartition(-scores, _MAX_NMS_CANDIDATES)[:_MAX_NMS_CANDIDATES]
            boxes, scores, class_ids = boxes[best], scores[best], class_ids[best]
        if self.layout == "v10":
            keep = np.argsort(-scores, kind="stable")[: self.config.max_detections]
        else:
            keep = nms(
                boxes, scores, class_ids, self.config.iou_threshold,
                class_agnostic=self.config.class_agnostic, max_output=self.config.max_detections,
            )
        return self.make_detections(class_ids[keep], scores[keep], transform.to_source(boxes[keep]))

    def _checked_output(self, outputs: Sequence[np.ndarray], index: int) -> np.ndarray:
        if not outputs:
            raise DecodeError("the YOLO decoder got no outputs")
        output = outputs[0]
        if not isinstance(output, np.ndarray) or output.ndim != 3:
            got = tuple(output.shape) if isinstance(output, np.ndarray) else type(output).__name__
            raise DecodeError(f"YOLO {self.layout} output 0: expected a 3-D array, got {got}")
        # Every declared size must hold on each frame; dynamic ones (the box count, the batch) may vary.
        for axis in (1, 2):
            declared = self.declared_shape[axis]
            if declared is not None and output.shape[axis] != declared:
                expected = ", ".join("N" if dim is None else str(dim) for dim in self.declared_shape[1:])
                raise DecodeError(
                    f"YOLO {self.layout} output 0: expected shape (B, {expected}), got {tuple(output.shape)}"
                )
        check_batch_item(output, index)
        return output

    def _scratch_array(self, name: str, size: int, dtype: np.dtype) -> np.ndarray:
        """Full-length per-frame temporaries, allocated once per (size, dtype) and reused."""
        key = (name, size, dtype)
        array = self._scratch.get(key)
        if array is None:
            if len(self._scratch) >= 8:  # a dynamic box count could otherwise grow this without bound
                self._scratch.clear()
            array = self._scratch[key] = np.empty(size, dtype)
        return array

    def _candidates_v5(self, prediction: np.ndarray) -> tuple[np.ndarray, ...] | None:
        threshold = self.config.conf_threshold
        objectness = prediction[:, 4]
        # score = objectness * class prob <= objectness, so this cheap pass drops almost everything.
        mask = np.greater_equal(
            objectness, threshold, out=self._scratch_array("mask", objectness.shape[0], _BOOL)
        )
        rows = prediction[mask]
        if rows.shape[0] == 0:
            return None
        class_probs = rows[:, 5:]
        class_ids = class_probs.argmax(axis=1)
        scores = class_probs[np.arange(rows.shape[0]), class_ids].astype(np.float64) * rows[:, 4]
        keep = scores >= threshold
        if not keep.any():
            return None
        rows = rows[keep]
        return xywh_to_xyxy(rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]), scores[keep], class_ids[keep]

    def _candidates_v8(self, prediction: np.ndarray) -> tuple[np.ndarray, ...] | None:
        class_scores = prediction[4:]
        count = prediction.shape[1]
        best = np.max(class_scores, axis=0, out=self._scratch_array("best", count, prediction.dtype))
        mask = np.greater_equal(
            best, self.config.conf_threshold, out=self._scratch_array("mask", count, _BOOL)
        )
        columns = np.flatnonzero(mask)
        if columns.size == 0:
            return None
        class_ids = class_scores[:, columns].argmax(axis=0)
        boxes = prediction[:4, columns]
        return (
            xywh_to_xyxy(boxes[0], boxes[1], boxes[2], boxes[3]),
            best[columns].astype(np.float64),
            class_ids,
        )

    def _candidates_v10(self, prediction: np.ndarray) -> tuple[np.ndarray, ...] | None:
        rows = prediction[prediction[:, 4] >= self.config.conf_threshold]
        class_ids = np.rint(rows[:, 5]).astype(np.int64)
        rows, class_ids = rows[class_ids >= 0], class_ids[class_ids >= 0]  # negative ids mark padding rows
        if rows.shape[0] == 0:
            return None
        return rows[:, :4].astype(np.float64), rows[:, 4].astype(np.float64), class_ids


def _raw_problems(layout: str, prediction: np.ndarray, input_hw: tuple[int, int], threshold: float) -> list[str]:
    """Raw values one batch item of a `layout` output cannot hold (see decoders/fit.py)."""
    pred = prediction.astype(np.float64, copy=False)
    if layout == "v5":
        if pred.shape[1] < 6:
            return ["fewer than 6 columns"]
        problem = score_range_problem(pred[:, 4:], "columns 4.. (objectness, class probabilities)")
        scores = pred[:, 4] * pred[:, 5:].max(axis=1)
        rows = pred[scores >= threshold]
        boxes = xywh_to_xyxy(rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3])
    elif layout == "v8":
        if pred.shape[0] < 5:
            return ["fewer than 5 rows"]
        problem = score_range_problem(pred[4:], "rows 4.. (class scores)")
        columns = pred[:, pred[4:].max(axis=0) >= threshold]
        boxes = xywh_to_xyxy(columns[0], columns[1], columns[2], columns[3])
    else:
        if pred.shape[1] != 6:
            return ["not 6 columns"]
        problem = score_range_problem(pred[:, 4], "column 4 (score)")
        rows = pred[pred[:, 4] >= threshold]
        ids = rows[:, 5]
        if problem is None and ids.size and (np.any(np.abs(ids - np.rint(ids)) > 1e-3) or ids.min() < -1):
            problem = f"column 5 (class id) holds values like {float(ids[0]):.3g}, not class ids"
        boxes = rows[:, :4]
    if problem is not None:
        return [problem]
    problem = box_range_problem(boxes, input_hw, "columns 0-3 (box)" if layout != "v8" else "rows 0-3 (box)")
    return [problem] if problem else []


def xywh_to_xyxy(cx: np.ndarray, cy: np.ndarray, w: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Centre and size columns -> [n, 4] x1, y1, x2, y2 in float64 (used by every YOLO-family head)."""
    boxes = np.empty((cx.shape[0], 4), np.float64)
    half_w = w * 0.5
    half_h = h * 0.5
    boxes[:, 0] = cx - half_w
    boxes[:, 1] = cy - half_h
    boxes[:, 2] = cx + half_w
    boxes[:, 3] = cy + half_h
    return boxes
