"""The unit of work that travels from a source to the outputs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(slots=True)
class Frame:
    """One captured image and its header: where and when it came from.

    `mono` (time.monotonic) is for budgets and ages; `wall` (time.time, or the sender's own capture stamp
    when the frame arrived with one, e.g. a ROS image or a ZeroMQ frame) is the capture stamp for messages.
    `frame_id` is the coordinate frame of the camera (ROS `header.frame_id`): the source's configured one,
    or the one the frame arrived with.

    Ownership of `image`: the source that captured it wrote it, and nobody writes it afterwards. One frame is
    handed to every model that reads its source and to the outputs that draw or forward it, all on their own
    threads, so the array is shared and must be treated as read-only; a raw frame that arrived over ZeroMQ is
    a view of the received message and is read-only in fact (`image.flags.writeable` is False). Whoever
    needs to change pixels (annotation, a preprocessing step) copies first. The array lives as long as the
    last holder keeps the frame: the mailbox drops its reference when a newer frame replaces it.
    """

    source: str
    seq: int  # per source, from 0, in capture (file) order; or the sender's own sequence number
    image: np.ndarray  # H x W x 3, uint8, BGR (OpenCV order)
    mono: float
    wall: float
    frame_id: str = ""
    stream: int = 0  # which opening of the source gave it (counts reconnects and passes over a file): trackers
    # start over when it changes


@dataclass(slots=True)
class Captured:
    """What a source's `_read` may return instead of a bare image: the image with the header it arrived
    with. Fields left None are filled by the source base (its own sequence number, the time of the read)."""

    image: np.ndarray
    wall: float | None = None  # the sender's capture stamp (wall-clock seconds)
    seq: int | None = None  # the sender's sequence number
    frame_id: str | None = None
