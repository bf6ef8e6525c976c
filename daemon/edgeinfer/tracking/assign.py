"""Box overlap and the linear assignment both trackers use."""

from __future__ import annotations

import numpy as np

from edgeinfer.lazy import lazy_import

_NO_MATCH = 1e6  # a cost no threshold accepts: pairs of different classes


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """[M, 4] x [N, 4] xyxy boxes -> [M, N] intersection over union."""
    if a.shape[0] == 0 or b.shape[0] == 0:
        return np.zeros((a.shape[0], b.shape[0]))
    width = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])
    height = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])
    inter = np.clip(width, 0, None) * np.clip(height, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def gate_classes(cost: np.ndarray, row_classes: np.ndarray, col_classes: np.ndarray) -> np.ndarray:
    """Pairs of different classes can never match."""
    cost[row_classes[:, None] != col_classes[None, :]] = _NO_MATCH
    return cost


def linear_assignment(cost: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Minimum-cost matching with every matched pair below `threshold` (Jonker-Volgenant, `lap`).
    Returns (rows, cols) of the matched pairs.

    Tracking costs are sparse (a track overlaps few detections), so rows and columns without any admissible
    pair are dropped first, and where every row left has one admissible column and no column is wanted twice
    the matching is that, with no solver call (the solver costs ~60 us for 50 x 50 here)."""
    admissible = cost < threshold
    rows = np.flatnonzero(admissible.any(axis=1))
    cols = np.flatnonzero(admissible.any(axis=0))
    if rows.size == 0:
        return np.empty(0, np.intp), np.empty(0, np.intp)
    sub = admissible[np.ix_(rows, cols)]
    if (sub.sum(axis=1) == 1).all() and (sub.sum(axis=0) == 1).all():
        return rows, cols[sub.argmax(axis=1)]
    lap = lazy_import("lap", "Tracking needs it: pip install lap (or '.[tracking]' from the edgeinfer checkout).")
    _, row_to_col, _ = lap.lapjv(cost[np.ix_(rows, cols)], extend_cost=True, cost_limit=threshold)
    matched = np.flatnonzero(row_to_col >= 0)
    return rows[matched], cols[row_to_col[matched]].astype(np.intp)
