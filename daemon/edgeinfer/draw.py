"""Draws a result on a copy of its frame: boxes, labels and scores; track ids, masks and keypoints when the
payload carries them; the top classes of a classifier; a dense map as a colour overlay.

Used by the annotated-video output and by the http output's live view. Detections that carry a `track_id`,
a `mask` (a full-size array, or issue 18's crop with its offset) or `keypoints` ([K, 3]: x, y, confidence)
get those drawn too. The frame the pipeline hands to every output
is never changed: drawing happens on a copy.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from .results import Classifications, DenseMap, Detections

FONT = cv2.FONT_HERSHEY_SIMPLEX
STATUS_COLOURS = {"ok": (40, 170, 40), "error": (0, 0, 220), "invalid": (0, 140, 255)}


def colour_for(key: int) -> tuple[int, int, int]:
    """A stable, well-spread BGR colour per class (or track) id."""
    hue = (key * 47) % 180
    hsv = np.uint8([[[hue, 200, 255]]])
    b, g, r = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def payload_parts(result: Any) -> tuple[str, list[Any], list[Any], Any]:
    """(kind, detections, classifications, dense map) of a result's typed payload: the one place that
    dispatches on the payload type. Tracks, instance masks and keypoints are `Detections` whose detections
    carry `track_id`, `mask`, `keypoints` (issue 18), drawn per detection."""
    payload = result.payload
    if isinstance(payload, Detections):
        return payload.kind, list(payload.detections), [], None
    if isinstance(payload, Classifications):
        return payload.kind, [], list(payload.classifications), None
    if isinstance(payload, DenseMap):
        return payload.kind, [], [], payload
    return payload.kind, [], [], None  # Missing (an error or a safe stop): nothing to draw but the header


def annotate(result: Any, image: np.ndarray | None = None) -> np.ndarray | None:
    """A drawn copy of the result's frame (or of `image`); None when the result carries no image."""
    if image is None:
        frame = getattr(result, "frame", None)
        image = None if frame is None else frame.image
    if image is None:
        return None
    canvas = np.ascontiguousarray(image[:, :, :3]).copy() if image.ndim == 3 else cv2.cvtColor(
        image, cv2.COLOR_GRAY2BGR)
    _, detections, classifications, dense = payload_parts(result)
    scale = max(1.0, max(canvas.shape[:2]) / 1000)  # readable at 640 px, proportionate at 1080p
    if dense is not None:
        _draw_dense(canvas, dense)
    _draw_classes(canvas, classifications, scale)
    for detection in detections:
        _draw_detection(canvas, detection, scale)
    _draw_header(canvas, result, scale)
    return canvas


def _draw_detection(canvas: np.ndarray, det: Any, scale: float) -> None:
    track_id = getattr(det, "track_id", None)
    colour = colour_for(track_id if track_id is not None else det.class_id)
    mask = getattr(det, "mask", None)
    if mask is not None:
        _blend_mask(canvas, mask, colour)
    x1, y1, x2, y2 = (int(round(v)) for v in det.bbox)
    thickness = max(1, int(round(2 * scale)))
    cv2.rectangle(canvas, (x1, y1), (x2, y2), colour, thickness)
    text = f"{det.label} {det.score:.2f}" if track_id is None else f"#{track_id} {det.label} {det.score:.2f}"
    _label(canvas, text, (x1, y1), colour, scale)
    keypoints = getattr(det, "keypoints", None)
    if keypoints is not None:
        _draw_keypoints(canvas, np.asarray(keypoints, dtype=np.float32), colour, thickness)


# COCO's 17-keypoint skeleton (Ultralytics pose models), 0-based: limbs drawn between confident points
COCO_SKELETON = ((15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6), (5, 7), (6, 8),
                 (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6))
KEYPOINT_MIN_CONFIDENCE = 0.5


def _draw_keypoints(canvas: np.ndarray, points: np.ndarray, colour: tuple[int, int, int], thickness: int) -> None:
    """[K, 2] or [K, 3] (x, y, confidence) in source pixels; points below KEYPOINT_MIN_CONFIDENCE are not drawn."""
    points = points.reshape(-1, points.shape[-1])
    seen = points[:, 2] >= KEYPOINT_MIN_CONFIDENCE if points.shape[1] >= 3 else np.ones(len(points), bool)
    xy = np.round(points[:, :2]).astype(int)
    if len(points) == 17:
        for a, b in COCO_SKELETON:
            if seen[a] and seen[b]:
                cv2.line(canvas, tuple(xy[a]), tuple(xy[b]), colour, thickness, cv2.LINE_AA)
    for (x, y), visible in zip(xy, seen):
        if visible:
            cv2.circle(canvas, (int(x), int(y)), max(2, thickness + 1), colour, -1)


def _blend_mask(canvas: np.ndarray, mask: Any, colour: tuple[int, int, int]) -> None:
    crop = getattr(mask, "crop", None)
    if crop is not None:  # an instance mask kept as the crop that holds it (x0, y0, crop): blend only there
        x0, y0 = int(mask.x0), int(mask.y0)
        region = canvas[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]]
        on = np.asarray(crop)[:region.shape[0], :region.shape[1]].astype(bool)
        region[on] = (region[on] * 0.5 + np.array(colour, np.float32) * 0.5).astype(np.uint8)
        return
    mask = np.asarray(mask)
    if mask.shape[:2] != canvas.shape[:2]:
        mask = cv2.resize(mask.astype(np.uint8), (canvas.shape[1], canvas.shape[0]),
                          interpolation=cv2.INTER_NEAREST)
    on = mask > 0
    canvas[on] = (canvas[on] * 0.5 + np.array(colour, np.float32) * 0.5).astype(np.uint8)


def _draw_classes(canvas: np.ndarray, classifications: list[Any], scale: float) -> None:
    y = int(40 * scale)
    for c in classifications[:5]:
        y += int(24 * scale)
        _label(canvas, f"{c.label} {c.score:.2f}", (4, y), colour_for(c.class_id), scale)


def _draw_dense(canvas: np.ndarray, dense: Any) -> None:
    values = np.asarray(dense.map)
    if values.shape[:2] != canvas.shape[:2]:
        values = cv2.resize(values, (canvas.shape[1], canvas.shape[0]), interpolation=cv2.INTER_NEAREST)
    if getattr(dense, "task", "") == "segmentation":
        lut = np.array([colour_for(i) for i in range(256)], np.uint8)
        colours = lut[values.astype(np.uint8)]
    else:  # saliency or depth: normalised to 0..255 and coloured
        v = values.astype(np.float32)
        span = float(v.max() - v.min()) or 1.0
        colours = cv2.applyColorMap(((v - v.min()) * (255.0 / span)).astype(np.uint8), cv2.COLORMAP_JET)
    cv2.addWeighted(canvas, 0.55, colours, 0.45, 0, dst=canvas)


def _label(canvas: np.ndarray, text: str, at: tuple[int, int], colour: tuple[int, int, int], scale: float) -> None:
    font_scale = 0.5 * scale
    thickness = max(1, int(round(scale)))
    (w, h), base = cv2.getTextSize(text, FONT, font_scale, thickness)
    x, y = max(0, at[0]), max(h + base, at[1])
    cv2.rectangle(canvas, (x, y - h - base), (x + w + 2, y), colour, -1)
    cv2.putText(canvas, text, (x + 1, y - base), FONT, font_scale, (0, 0, 0), thickness, cv2.LINE_AA)


def _draw_header(canvas: np.ndarray, result: Any, scale: float) -> None:
    status = getattr(result, "status", "ok")
    seq = getattr(result, "seq", None)
    age = getattr(result, "age_ms", None)
    text = f"{result.source} #{seq if seq is not None else '-'} {result.model} {status}"
    if age is not None:
        text += f" {age:.0f} ms"
    _label(canvas, text, (0, 0), STATUS_COLOURS.get(status, (200, 200, 200)), scale)
