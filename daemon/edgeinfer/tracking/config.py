"""The `tracker:` block of a model (schema only: importing it loads no tracker code)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from edgeinfer.schema import StrictModel


class ByteTrackConfig(StrictModel):
    """ByteTrack (Zhang et al., 2022): detections above `high_threshold` are matched to tracks first, those
    between `low_threshold` and it are then matched to the tracks still unmatched, so an object whose score
    dips (partly occluded, blurred) keeps its track instead of losing it. Defaults follow Ultralytics'
    bytetrack.yaml but for match_threshold (0.8 there) and max_lost_frames (track_buffer 30 there): 0.85 and 60
    took TUD-Campus's IDF1 from 0.83 to 0.92 (docs/tracking.md). Frames are the unit of time: at 30 fps,
    `max_lost_frames: 60` keeps a lost track 2 s."""

    type: Literal["bytetrack"] = "bytetrack"
    high_threshold: float = Field(0.25, gt=0.0, le=1.0, description="first association pass: score >= this")
    low_threshold: float = Field(0.1, ge=0.0, le=1.0, description="second pass: low_threshold <= score < high")
    new_track_threshold: float = Field(0.25, gt=0.0, le=1.0, description="an unmatched detection starts a track "
                                       "when its score >= this")
    match_threshold: float = Field(0.85, gt=0.0, le=1.0, description="first pass: a match needs a cost "
                                   "1 - IoU x score below this")
    max_lost_frames: int = Field(60, ge=0, le=100_000, description="a lost track is kept (and can come back with "
                                 "its id) this many frames")
    min_hits: int = Field(2, ge=1, le=100, description="a new track is confirmed (gets an id, is published) after "
                          "matching this many frames in a row; tracks in the first frame of a stream are "
                          "confirmed at once")
    per_class: bool = Field(True, description="match detections only to tracks of the same class")
    fuse_score: bool = Field(True, description="first pass cost uses IoU x score, not IoU alone")

    @model_validator(mode="after")
    def _ordered(self) -> ByteTrackConfig:
        if self.low_threshold >= self.high_threshold:
            raise ValueError(f"low_threshold ({self.low_threshold}) must be below high_threshold "
                             f"({self.high_threshold})")
        return self


TrackerConfig = ByteTrackConfig  # one kind today; a discriminated union when a second one lands
