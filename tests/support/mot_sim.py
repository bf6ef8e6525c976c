"""Tracking accuracy on real pedestrian trajectories: the ground truth motmetrics ships (TUD-Campus,
TUD-Stadtmitte, MOTChallenge format), a simulated detector over it, a plain IoU tracker as the baseline, and
motmetrics' IDF1 / ID switches / MOTA. Used by tests/unit/test_tracking_accuracy.py and
benchmarks/bench_tracking.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SEQUENCES = ("TUD-Campus", "TUD-Stadtmitte")


@dataclass(frozen=True)
class DetectorModel:
    """A seeded stand-in for a detector: drops a share of true boxes, jitters the rest (sigma as a share of the
    box size), and adds false positives (a share of the true boxes per frame, anywhere in the image)."""

    miss_rate: float = 0.10
    jitter: float = 0.05
    false_positive_rate: float = 0.05
    seed: int = 0


def load_ground_truth(sequence: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """frame -> (ids [N], xyxy boxes [N, 4]) from motmetrics/data/<sequence>/gt.txt."""
    import motmetrics

    path = Path(motmetrics.__file__).parent / "data" / sequence / "gt.txt"
    rows = np.loadtxt(path, delimiter=",", ndmin=2)
    frames: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for frame in np.unique(rows[:, 0]).astype(int):
        r = rows[rows[:, 0] == frame]
        boxes = np.column_stack([r[:, 2], r[:, 3], r[:, 2] + r[:, 4], r[:, 3] + r[:, 5]])
        frames[int(frame)] = (r[:, 1].astype(int), boxes)
    return frames


def simulate_detections(truth: dict[int, tuple[np.ndarray, np.ndarray]], model: DetectorModel
                        ) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """frame -> (xyxy boxes [M, 4], scores [M]) as the simulated detector reports them."""
    rng = np.random.default_rng(model.seed)
    all_boxes = np.concatenate([boxes for _, boxes in truth.values()])
    extent = all_boxes[:, 2:].max(axis=0)  # the image, as far as the ground truth reaches
    sizes = all_boxes[:, 2:] - all_boxes[:, :2]
    out = {}
    for frame in range(1, max(truth) + 1):
        _, boxes = truth.get(frame, (np.zeros(0, int), np.zeros((0, 4))))
        kept = boxes[rng.random(len(boxes)) >= model.miss_rate]
        w, h = kept[:, 2] - kept[:, 0], kept[:, 3] - kept[:, 1]
        cx = (kept[:, 0] + kept[:, 2]) / 2 + rng.normal(0, model.jitter, len(kept)) * w
        cy = (kept[:, 1] + kept[:, 3]) / 2 + rng.normal(0, model.jitter, len(kept)) * h
        w = w * (1 + rng.normal(0, model.jitter, len(kept)))
        h = h * (1 + rng.normal(0, model.jitter, len(kept)))
        true_boxes = np.column_stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        true_scores = rng.uniform(0.3, 1.0, len(kept))
        n_false = rng.binomial(max(len(boxes), 1), model.false_positive_rate)
        size = sizes[rng.integers(0, len(sizes), n_false)]
        corner = rng.uniform(0, 1, (n_false, 2)) * np.maximum(extent - size, 1)
        false_boxes = np.column_stack([corner, corner + size])
        false_scores = rng.uniform(0.1, 0.6, n_false)
        out[frame] = (np.concatenate([true_boxes, false_boxes]), np.concatenate([true_scores, false_scores]))
    return out


class IouTracker:
    """The baseline: match each frame's detections to the previous frame's tracks by IoU (greedy, best pair
    first, IoU >= 0.3); unmatched detections start tracks, unmatched tracks end. No motion model, no memory."""

    def __init__(self, min_iou: float = 0.3, min_score: float = 0.25):
        self.min_iou = min_iou
        self.min_score = min_score
        self.next_id = 1
        self.boxes = np.zeros((0, 4))
        self.ids = np.zeros(0, np.int64)

    def update(self, boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
        from edgeinfer.tracking.assign import iou_matrix

        keep = scores >= self.min_score
        ids = np.zeros(len(boxes), np.int64)
        overlap = iou_matrix(self.boxes, boxes)
        overlap[:, ~keep] = 0.0
        while overlap.size and overlap.max() >= self.min_iou:
            track, det = np.unravel_index(np.argmax(overlap), overlap.shape)
            ids[det] = self.ids[track]
            overlap[track, :] = 0.0
            overlap[:, det] = 0.0
        for det in np.flatnonzero(keep & (ids == 0)):
            ids[det] = self.next_id
            self.next_id += 1
        self.boxes, self.ids = boxes[ids > 0], ids[ids > 0]
        return ids


def bytetrack_runner(config=None) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    from edgeinfer.tracking.bytetrack import ByteTracker

    tracker = ByteTracker(config)
    return lambda boxes, scores: tracker.update(boxes, scores, np.zeros(len(boxes), np.int64)).track_ids


def iou_runner() -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    return IouTracker().update


def score_sequence(sequence: str, runner: Callable[[np.ndarray, np.ndarray], np.ndarray],
                   detector: DetectorModel) -> dict[str, float]:
    """Run a tracker over one sequence's simulated detections; motmetrics' summary (IoU >= 0.5 is a match)."""
    import motmetrics as mm

    from edgeinfer.tracking.assign import iou_matrix

    truth = load_ground_truth(sequence)
    detections = simulate_detections(truth, detector)
    accumulator = mm.MOTAccumulator(auto_id=True)
    for frame in range(1, max(truth) + 1):
        gt_ids, gt_boxes = truth.get(frame, (np.zeros(0, int), np.zeros((0, 4))))
        boxes, scores = detections[frame]
        track_ids = runner(boxes, scores)
        published = track_ids > 0
        hyp = boxes[published]
        distances = 1.0 - iou_matrix(gt_boxes, hyp)
        distances[distances > 0.5] = np.nan  # what mm.distances.iou_matrix(max_iou=0.5) gives; it calls
        # np.asfarray, which numpy 2 removed
        accumulator.update(gt_ids.tolist(), track_ids[published].tolist(), distances)
    metrics = ["idf1", "num_switches", "mota", "num_unique_objects", "num_false_positives", "num_misses",
               "mostly_tracked"]
    summary = mm.metrics.create().compute(accumulator, metrics=metrics, name=sequence)
    return {name: float(summary[name].iloc[0]) for name in metrics}
