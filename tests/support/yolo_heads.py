"""Known-answer Ultralytics segment and pose head outputs, and NumPy references of what Ultralytics does with
them (ultralytics/utils/ops.py: process_mask + scale_image; scale_coords for keypoints)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from support.byom_models import constant_outputs_model

INPUT = 64  # network input size (square)
PROTO = INPUT // 4
NAMES = "{0: 'person', 1: 'ball'}"


def segment_outputs() -> tuple[np.ndarray, np.ndarray]:
    """Head [1, 4 + 2 + 2, 3] and prototypes [1, 2, 16, 16]. Candidate 0: a ball (class 1, 0.9) whose mask is
    a disk of radius 12 input pixels around (32, 32), box 28 x 28 around it; candidate 1: a person (0.8), box
    (6, 14)-(18, 26) filled by prototype 1 (positive everywhere); candidate 2: below the threshold (0.1)."""
    centres = (np.arange(PROTO) + 0.5) * (INPUT / PROTO)  # prototype pixel centres in input pixels
    yy, xx = np.meshgrid(centres, centres, indexing="ij")
    disk = np.where(np.hypot(xx - 32, yy - 32) <= 12, 8.0, -8.0)
    protos = np.stack([disk, np.full((PROTO, PROTO), 8.0)])[None]
    head = np.zeros((1, 8, 3), np.float32)
    head[0, :, 0] = [32, 32, 28, 28, 0.0, 0.9, 1.0, 0.0]
    head[0, :, 1] = [12, 20, 12, 12, 0.8, 0.0, 0.0, 1.0]
    head[0, :, 2] = [50, 50, 10, 10, 0.1, 0.0, 1.0, 0.0]
    return head, protos.astype(np.float32)


def reference_masks(head: np.ndarray, protos: np.ndarray, transform, keep: list[int], nc: int = 2
                    ) -> list[np.ndarray]:
    """Ultralytics' way, for candidates `keep`: sigmoid(coefficients @ prototypes), bilinear to the input size,
    cropped to the box (input pixels), then scale_image (cut the padding, resize to the source), > 0.5."""
    out = []
    nm = protos.shape[1]
    for column in keep:
        cx, cy, w, h = head[0, :4, column]
        coefficients = head[0, 4 + nc:4 + nc + nm, column]
        probability = 1 / (1 + np.exp(-(coefficients @ protos[0].reshape(nm, -1)))).reshape(PROTO, PROTO)
        upsampled = cv2.resize(probability.astype(np.float32), (INPUT, INPUT), interpolation=cv2.INTER_LINEAR)
        centres = np.arange(INPUT) + 0.5
        inside = (((centres >= cy - h / 2) & (centres <= cy + h / 2))[:, None]
                  & ((centres >= cx - w / 2) & (centres <= cx + w / 2))[None, :])
        upsampled = upsampled * inside
        new_w, new_h = transform.resized_size
        top, left = int(transform.pad_y), int(transform.pad_x)
        cut = upsampled[top:top + new_h, left:left + new_w]
        source = cv2.resize(cut, (transform.src_w, transform.src_h), interpolation=cv2.INTER_LINEAR)
        out.append(source > 0.5)
    return out


def pose_outputs(k: int = 17) -> tuple[np.ndarray, np.ndarray]:
    """Head [1, 4 + 1 + k * 3, 2]: one person (0.85) with keypoint i at input (10 + 2i, 12 + i), confidence
    0.05 * i, box (8, 10)-(48, 40); one candidate below the threshold. Returns (head, keypoints [k, 3] in
    input pixels)."""
    keypoints = np.stack([10 + 2.0 * np.arange(k), 12 + 1.0 * np.arange(k), 0.05 * np.arange(k) % 1], axis=1)
    head = np.zeros((1, 5 + 3 * k, 2), np.float32)
    head[0, :5, 0] = [28, 25, 40, 30, 0.85]
    head[0, 5:, 0] = keypoints.ravel()
    head[0, :5, 1] = [20, 20, 10, 10, 0.2]
    return head, keypoints


def instance_models(folder: Path) -> tuple[Path, Path]:
    """Two small ONNX models answering every frame with the heads above, with Ultralytics' exporter metadata:
    (segment model, pose model)."""
    head, protos = segment_outputs()
    segmenter = constant_outputs_model(folder / "seg.onnx", [("output0", head), ("output1", protos)],
                                       metadata={"names": NAMES, "task": "segment", "imgsz": f"[{INPUT}, {INPUT}]"})
    pose_head, _ = pose_outputs()
    poser = constant_outputs_model(folder / "pose.onnx", [("output0", pose_head)],
                                   metadata={"names": "{0: 'person'}", "task": "pose", "kpt_shape": "[17, 3]",
                                             "imgsz": f"[{INPUT}, {INPUT}]"})
    return segmenter, poser
