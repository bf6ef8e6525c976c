"""Does the decoder fit what the model really outputs? Run once on a test image and look.

The declared output shape cannot tell every wrong layout from the right one: `layout: v8` on a v5 model
([1, 2535, 85]) passes the shape check and then publishes coordinates as scores ("score": 629.9,
"label": "class_437"). One inference on a test image shows what each column holds: scores must lie in
[0, 1] and confident boxes near the input. `check` and start-up both call `check_decoder_fit`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeinfer.decoders.base import DecodeError, Decoder


def test_image(height: int, width: int) -> np.ndarray:
    """A fixed BGR picture with edges, flat areas and noise, so a detector's heads produce varied values."""
    rng = np.random.default_rng(20260)
    image = np.full((height, width, 3), 114, np.uint8)
    ys, xs = np.mgrid[0:height, 0:width]
    image[..., 0] = (xs * 255 // max(1, width - 1)).astype(np.uint8)
    image[..., 1] = (ys * 255 // max(1, height - 1)).astype(np.uint8)
    for _ in range(6):
        y0, x0 = int(rng.integers(0, height)), int(rng.integers(0, width))
        y1 = min(height, y0 + int(rng.integers(8, height // 2 + 9)))
        x1 = min(width, x0 + int(rng.integers(8, width // 2 + 9)))
        image[y0:y1, x0:x1] = rng.integers(0, 256, 3, dtype=np.uint8)
    noise = rng.integers(-20, 21, image.shape)
    # mid-tones only (16..200): no saturated white or black, which some test models treat as a trigger
    return np.clip(image.astype(np.int16) + noise, 16, 200).astype(np.uint8)


def check_decoder_fit(backend: Any, decoder: Decoder, stage: Any, labels_path: Any = None) -> list[str]:
    """Run the model once on `test_image` through its own input stage (buffer set 0, before the pipeline
    uses it) and let the decoder judge the raw outputs.

    Raises DecodeError (naming `decoder.layout`) for outputs the layout cannot have; returns warnings, each
    starting with the config key it is about (e.g. "labels: ...").
    """
    height, width = stage.input_size
    stage.write(0, 0, test_image(height, width))
    outputs, _ = backend.submit(0, 1).wait()
    check = getattr(decoder, "output_problems", None)
    if check is not None:
        problems = check(outputs, (height, width))
        if problems:
            raise DecodeError("; ".join(problems))
    warnings = []
    classes = getattr(decoder, "num_classes", None)
    if classes is not None and decoder.labels and len(decoder.labels) < classes:
        where = f" in {labels_path}" if labels_path else ""
        warnings.append(f"labels: {len(decoder.labels)} label(s){where} for the model's {classes} classes; "
                        f"classes {len(decoder.labels)} to {classes - 1} are published as class_<id>")
    return warnings


def score_range_problem(scores: np.ndarray, where: str) -> str | None:
    if scores.size == 0:
        return None
    if not np.all(np.isfinite(scores)):
        return f"{where} holds non-finite values (NaN or inf)"
    low, high = float(scores.min()), float(scores.max())
    if low < -1e-3 or high > 1 + 1e-3:
        return f"{where} holds values from {low:.3g} to {high:.3g}, but scores lie in [0, 1]"
    return None


def box_range_problem(boxes_xyxy: np.ndarray, input_hw: Sequence[int], where: str) -> str | None:
    """Confident boxes whose corners lie more than one input size outside the input."""
    if boxes_xyxy.size == 0:
        return None
    height, width = input_hw
    if not np.all(np.isfinite(boxes_xyxy)):
        return f"{where} holds non-finite box coordinates"
    limits = np.array([width, height, width, height], np.float64)
    outside = np.any((boxes_xyxy < -limits) | (boxes_xyxy > 2 * limits), axis=1)
    if outside.any():
        example = [round(float(v), 1) for v in boxes_xyxy[int(np.argmax(outside))]]
        return (f"{where}: {int(outside.sum())} confident box(es) lie far outside the {width}x{height} input "
                f"(e.g. {example})")
    return None
