"""The tracking stage of one model: between decode and publish, one tracker per source.

A source's tracker starts over (ids from 1) when the source reconnects or starts a new pass over a file
(`Frame.stream` changes) and when the frame sequence goes backwards (a ZeroMQ or ROS sender restarted):
motion and ids from before a gap in the stream would only mislead. Only detections of confirmed tracks are
published; each carries `track_id` and `track_age` (see edgeinfer/instances.py).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from edgeinfer.frame import Frame
from edgeinfer.instances import Instance
from edgeinfer.lazy import lazy_import
from edgeinfer.results import Detections, Payload
from edgeinfer.tracking.bytetrack import ByteTracker
from edgeinfer.tracking.config import TrackerConfig


class TrackingStage:
    def __init__(self, config: TrackerConfig):
        # at start, not on the first frame with detections
        lazy_import("lap", "Tracking needs it: pip install lap (or '.[tracking]' from the edgeinfer checkout).")
        self.config = config
        self._trackers: dict[str, ByteTracker] = {}
        self._position: dict[str, tuple[int, int]] = {}  # source -> (stream, seq) of its last frame
        self.resets = 0
        self.dropped_non_finite = 0  # detections with a NaN/inf box or score: never tracked, never published

    def apply(self, frame: Frame, payload: Payload) -> Payload:
        """The payload with only the detections of confirmed tracks, each with its track id (same type: masks
        and keypoints keep theirs); a payload without boxes passes unchanged."""
        if not isinstance(payload, Detections):
            return payload
        tracker = self._tracker_for(frame)
        detections = payload.detections
        count = len(detections)
        boxes = np.array([d.bbox for d in detections], np.float64).reshape(count, 4)
        scores = np.fromiter((d.score for d in detections), np.float64, count)
        finite = np.isfinite(boxes).all(axis=1) & np.isfinite(scores)
        if not finite.all():  # one NaN would poison a track's Kalman state for good
            self.dropped_non_finite += int(count - finite.sum())
            detections = [d for d, ok in zip(detections, finite.tolist(), strict=True) if ok]
            boxes, scores, count = boxes[finite], scores[finite], len(detections)
        class_ids = np.fromiter((d.class_id for d in detections), np.int64, count)
        assignment = tracker.update(boxes, scores, class_ids)
        tracked = [Instance.of(d, track_id=int(track_id), track_age=int(age))
                   for d, track_id, age in zip(detections, assignment.track_ids.tolist(), assignment.ages.tolist(),
                                               strict=True) if track_id > 0]
        return replace(payload, detections=tracked)

    def _tracker_for(self, frame: Frame) -> ByteTracker:
        tracker = self._trackers.get(frame.source)
        if tracker is None:
            tracker = self._trackers[frame.source] = ByteTracker(self.config)
        previous = self._position.get(frame.source)
        if previous is not None and (frame.stream != previous[0] or frame.seq < previous[1]):
            tracker.reset()
            self.resets += 1
        self._position[frame.source] = (frame.stream, frame.seq)
        return tracker

    def counters(self) -> dict[str, object]:
        return {"resets": self.resets, "dropped_non_finite": self.dropped_non_finite,
                "tracks": {source: tracker.states() for source, tracker in self._trackers.items()}}
