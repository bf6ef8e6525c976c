"""The unit of work that travels from a source to the outputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(slots=True)
class Frame:
    """One captured image and where/when it came from.

    `mono` (time.monotonic) is for budgets and ages; `wall` (time.time) is for messages.
    """

    source: str
    seq: int  # per source, from 0, in capture (file) order
    image: np.ndarray  # H x W x 3, uint8, BGR (OpenCV order)
    mono: float
    wall: float
