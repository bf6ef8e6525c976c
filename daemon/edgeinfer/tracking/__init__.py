"""Multi-object tracking: stable ids for detections across frames, one tracker per (source, model).

`config` holds the schema only; `bytetrack` (numpy + `lap`) loads when a model turns tracking on.
"""

from __future__ import annotations

from edgeinfer.tracking.config import ByteTrackConfig, TrackerConfig

__all__ = ["ByteTrackConfig", "TrackerConfig"]
