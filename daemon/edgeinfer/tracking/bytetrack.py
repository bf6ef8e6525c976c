"""ByteTrack on arrays: one tracker per (source, model) stream.

Track states: tentative (seen, not yet `min_hits` frames in a row; no id, not published), confirmed (has an id;
published while matched), lost (confirmed, unmatched for up to `max_lost_frames`; not published, its Kalman
prediction keeps moving so it can be matched again with the same id), removed (forgotten).

Per frame, after a Kalman prediction of every track:
  1. confirmed tracks, then lost tracks  <->  high-score detections   (cost 1 - IoU x score, < match_threshold)
  2. confirmed tracks left    <->  low-score detections    (cost 1 - IoU, < 0.5); still unmatched -> lost
  3. tentative tracks         <->  high-score detections left (cost < 0.7); unmatched -> removed
  4. high-score detections left with score >= new_track_threshold start tentative tracks
  5. lost tracks older than max_lost_frames are removed, and so is a lost track that overlaps a confirmed one
     (IoU > 0.85): it was the same object.
Ids are handed out at confirmation, 1, 2, 3, ... per stream, so a detection that never became a track costs none.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgeinfer.tracking import kalman
from edgeinfer.tracking.assign import gate_classes, iou_matrix, linear_assignment
from edgeinfer.tracking.config import ByteTrackConfig

TENTATIVE, CONFIRMED, LOST = 0, 1, 2
STATE_NAMES = {TENTATIVE: "tentative", CONFIRMED: "confirmed", LOST: "lost"}
_LOW_PASS_THRESHOLD = 0.5  # ByteTrack's second-pass and tentative-pass limits
_TENTATIVE_THRESHOLD = 0.7
_DUPLICATE_IOU = 0.85
LOST_PENALTY = 0.1


@dataclass(frozen=True)
class TrackAssignment:
    """Per input detection: its track id (0: not part of a confirmed track, not to be published) and the track's
    age in frames (frames since the track started, 1 on its first)."""

    track_ids: np.ndarray  # [N] int64
    ages: np.ndarray  # [N] int64


class ByteTracker:
    def __init__(self, config: ByteTrackConfig | None = None):
        self.config = config or ByteTrackConfig()
        self.frames = 0
        self.next_id = 1
        self._mean = np.zeros((0, 8))
        self._cov = np.zeros((0, 4, 3))  # per coordinate: var(x), cov(x, v), var(v) (kalman.py)
        self._id = np.zeros(0, np.int64)
        self._class = np.zeros(0, np.int64)
        self._state = np.zeros(0, np.int8)
        self._hits = np.zeros(0, np.int64)
        self._start = np.zeros(0, np.int64)
        self._last = np.zeros(0, np.int64)

    def reset(self) -> None:
        """Forget every track and start ids from 1 (a new stream: the source reconnected)."""
        self.__init__(self.config)  # type: ignore[misc]

    @property
    def track_count(self) -> int:
        return int(self._id.shape[0])

    def states(self) -> dict[str, int]:
        return {name: int(np.count_nonzero(self._state == state)) for state, name in STATE_NAMES.items()}

    def update(self, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray) -> TrackAssignment:
        """One frame's detections ([N, 4] xyxy, [N] scores, [N] class ids) -> their track ids and ages."""
        config = self.config
        self.frames += 1
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        class_ids = np.asarray(class_ids, np.int64).reshape(-1)
        if not config.per_class:
            class_ids = np.zeros_like(class_ids)
        count = boxes.shape[0]
        track_of = np.full(count, -1, np.int64)  # detection -> row in the track table
        if self.track_count:
            mean = self._mean.copy()
            mean[self._state == LOST, 7] = 0.0  # a lost box stops growing or shrinking (as ByteTrack)
            self._mean, self._cov = kalman.predict(mean, self._cov)
        predicted = kalman.xyah_to_xyxy(self._mean[:, :4])
        high = np.flatnonzero(scores >= config.high_threshold)
        low = np.flatnonzero((scores >= config.low_threshold) & (scores < config.high_threshold))
        matched_tracks = np.zeros(self.track_count, bool)

        def associate(tracks: np.ndarray, dets: np.ndarray, threshold: float, fuse: bool,
                      penalty: np.ndarray | None = None) -> np.ndarray:
            """Match, update the matched tracks; returns the detections left unmatched."""
            if tracks.size == 0 or dets.size == 0:
                return dets
            overlap = iou_matrix(predicted[tracks], boxes[dets])
            cost = 1.0 - (overlap * scores[dets][None, :] if fuse else overlap)
            gate_classes(cost, self._class[tracks], class_ids[dets])
            if penalty is None:
                rows, cols = linear_assignment(cost, threshold)
            else:  # the penalty ranks the pairs; the threshold applies to the overlap alone
                rows, cols = linear_assignment(cost + penalty[:, None], threshold + float(penalty.max()))
                good = cost[rows, cols] < threshold
                rows, cols = rows[good], cols[good]
            track_of[dets[cols]] = tracks[rows]
            matched_tracks[tracks[rows]] = True
            return np.delete(dets, cols)

        # confirmed and lost tracks in one pass, a lost track's cost raised by LOST_PENALTY: where a lost track's
        # prediction drifts onto a followed object, the followed track keeps its detection; a lost track whose
        # object is back still wins over a poor overlap of a neighbour
        pool = np.flatnonzero(self._state != TENTATIVE)
        high_left = associate(pool, high, config.match_threshold, config.fuse_score,
                              penalty=np.where(self._state[pool] == LOST, LOST_PENALTY, 0.0))
        confirmed_left = np.flatnonzero((self._state == CONFIRMED) & ~matched_tracks)
        associate(confirmed_left, low, _LOW_PASS_THRESHOLD, False)
        tentative = np.flatnonzero(self._state == TENTATIVE)
        high_left = associate(tentative, high_left, _TENTATIVE_THRESHOLD, config.fuse_score)

        # matched tracks take their detection: Kalman update, class, hits; lost ones come back
        rows = track_of[track_of >= 0]
        dets = np.flatnonzero(track_of >= 0)
        if rows.size:
            self._mean[rows], self._cov[rows] = kalman.update(self._mean[rows], self._cov[rows],
                                                              kalman.xyxy_to_xyah(boxes[dets]))
            self._hits[rows] += 1
            self._last[rows] = self.frames
            self._state[rows[self._state[rows] == LOST]] = CONFIRMED
        self._state[(self._state == CONFIRMED) & ~matched_tracks] = LOST
        keep = ~((self._state == TENTATIVE) & ~matched_tracks)  # a tentative track must match every frame

        new = high_left[scores[high_left] >= config.new_track_threshold]
        if new.size:
            mean, cov = kalman.initiate(kalman.xyxy_to_xyah(boxes[new]))
            first = self.track_count
            self._append(mean, cov, class_ids[new])
            keep = np.concatenate([keep, np.ones(new.size, bool)])
            track_of[new] = np.arange(first, first + new.size)
        immediate = self.frames == 1 or config.min_hits == 1
        ready = np.flatnonzero((self._state == TENTATIVE) & keep & (immediate | (self._hits >= config.min_hits)))
        if ready.size:  # ids in track-table order: oldest track first, new ones in detection order
            self._state[ready] = CONFIRMED
            self._id[ready] = np.arange(self.next_id, self.next_id + ready.size)
            self.next_id += ready.size

        lost_too_long = (self._state == LOST) & (self.frames - self._last > config.max_lost_frames)
        keep &= ~lost_too_long
        keep &= ~self._duplicates()
        published = track_of >= 0
        published[published] = self._state[track_of[published]] == CONFIRMED
        track_ids = np.zeros(count, np.int64)
        ages = np.zeros(count, np.int64)
        track_ids[published] = self._id[track_of[published]]
        ages[published] = self.frames - self._start[track_of[published]] + 1
        self._compact(keep)
        return TrackAssignment(track_ids, ages)

    def _append(self, mean: np.ndarray, cov: np.ndarray, class_ids: np.ndarray) -> None:
        n = mean.shape[0]
        self._mean = np.concatenate([self._mean, mean])
        self._cov = np.concatenate([self._cov, cov])
        self._id = np.concatenate([self._id, np.zeros(n, np.int64)])
        self._class = np.concatenate([self._class, class_ids])
        self._state = np.concatenate([self._state, np.full(n, TENTATIVE, np.int8)])
        self._hits = np.concatenate([self._hits, np.ones(n, np.int64)])
        self._start = np.concatenate([self._start, np.full(n, self.frames, np.int64)])
        self._last = np.concatenate([self._last, np.full(n, self.frames, np.int64)])

    def _duplicates(self) -> np.ndarray:
        """Lost tracks that overlap a confirmed track of the same class (IoU > 0.85): the same object, now
        followed by the confirmed track. (ByteTrack drops the younger of the pair; dropping the lost one always
        keeps what this frame published valid.)"""
        drop = np.zeros(self.track_count, bool)
        confirmed = np.flatnonzero(self._state == CONFIRMED)
        lost = np.flatnonzero(self._state == LOST)
        if confirmed.size == 0 or lost.size == 0:
            return drop
        boxes = kalman.xyah_to_xyxy(self._mean[:, :4])
        overlap = iou_matrix(boxes[confirmed], boxes[lost])
        overlap[self._class[confirmed][:, None] != self._class[lost][None, :]] = 0.0
        drop[lost[(overlap > _DUPLICATE_IOU).any(axis=0)]] = True
        return drop

    def _compact(self, keep: np.ndarray) -> None:
        if keep.all():
            return
        for name in ("_mean", "_cov", "_id", "_class", "_state", "_hits", "_start", "_last"):
            setattr(self, name, getattr(self, name)[keep])
